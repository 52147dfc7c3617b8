# Scheduled training: EventBridge runs a one-off Fargate task that trains, evaluates and
# publishes a model version to the registry (the API picks it up via aliases.json).

resource "aws_ecs_task_definition" "train" {
  family                   = "${var.name}-train"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.train_cpu
  memory                   = var.train_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.train.arn
  tags                     = var.tags

  ephemeral_storage {
    size_in_gib = 50 # snapshots are downloaded to local disk for training
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([{
    name                   = "train"
    image                  = var.image
    essential              = true
    command                = var.train_command
    environment            = local.environment_list
    secrets                = local.secrets
    readonlyRootFilesystem = true
    mountPoints            = local.tmp_volume
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.task["train"].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "train"
      }
    }
  }])
}

data "aws_iam_policy_document" "events_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "events_run_task" {
  statement {
    sid       = "RunTrainingTask"
    actions   = ["ecs:RunTask"]
    resources = [aws_ecs_task_definition.train.arn_without_revision]
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.this.arn]
    }
  }
  statement {
    sid       = "PassTrainingRoles"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.execution.arn, aws_iam_role.train.arn]
  }
}

resource "aws_iam_role" "events" {
  name_prefix        = "${var.name}-sched-"
  assume_role_policy = data.aws_iam_policy_document.events_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "events" {
  name   = "run-training"
  role   = aws_iam_role.events.id
  policy = data.aws_iam_policy_document.events_run_task.json
}

resource "aws_cloudwatch_event_rule" "train" {
  name                = "${var.name}-train"
  description         = "Train and publish a streamrec model version"
  schedule_expression = var.train_schedule
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "train" {
  rule     = aws_cloudwatch_event_rule.train.name
  arn      = aws_ecs_cluster.this.arn
  role_arn = aws_iam_role.events.arn

  ecs_target {
    task_definition_arn = aws_ecs_task_definition.train.arn_without_revision
    launch_type         = "FARGATE"
    task_count          = 1
    propagate_tags      = "TASK_DEFINITION"
    network_configuration {
      subnets          = var.private_subnet_ids
      security_groups  = [aws_security_group.tasks.id]
      assign_public_ip = false
    }
  }
}
