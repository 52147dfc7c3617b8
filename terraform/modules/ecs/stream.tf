# Stream workers: one consumer group; Kafka spreads the partitions over the tasks, so the
# desired count follows the partition count (more tasks than partitions would sit idle).

locals {
  stream_workers = ceil(var.topic_partitions / var.partitions_per_worker)
}

resource "aws_ecs_task_definition" "stream" {
  family                   = "${var.name}-stream"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.stream_cpu
  memory                   = var.stream_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.stream.arn
  tags                     = var.tags

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode(concat([{
    name                   = "stream"
    image                  = var.image
    essential              = true
    command                = ["stream"]
    environment            = local.environment_list
    secrets                = local.secrets
    readonlyRootFilesystem = true
    mountPoints            = local.tmp_volume
    # SIGTERM lets the worker flush its snapshot buffer and commit; give it the time.
    stopTimeout = 60
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.task["stream"].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "stream"
      }
    }
  }], local.sidecar["stream"]))
}

resource "aws_ecs_service" "stream" {
  name            = "stream"
  cluster         = aws_ecs_cluster.this.id
  task_definition = aws_ecs_task_definition.stream.arn
  desired_count   = local.stream_workers
  launch_type     = "FARGATE"
  propagate_tags  = "SERVICE"
  tags            = var.tags
  # Replace one worker at a time: each stop/start is a group rebalance, keep them few.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
}
