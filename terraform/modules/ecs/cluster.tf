# The ECS cluster, the tasks' network identity and the pieces every task definition shares.

data "aws_region" "current" {}

locals {
  region      = data.aws_region.current.name
  api_port    = 8000
  stream_port = 6066 # STREAMREC_STREAM_METRICS_PORT: the worker's /metrics
  metrics     = var.amp_remote_write_url != ""

  # The same STREAMREC_* settings the docker-compose file and the local stack use; every
  # task (API, stream worker, training) gets them. The Redis and topic durability settings
  # are what `streamrec stack up --topology cluster` prints for its cluster.
  environment = merge(
    {
      STREAMREC_KAFKA_BOOTSTRAP           = var.kafka_bootstrap
      STREAMREC_TOPIC_PREFIX              = var.topic_prefix
      STREAMREC_TOPIC_PARTITIONS          = tostring(var.topic_partitions)
      STREAMREC_TOPIC_REPLICATION_FACTOR  = tostring(var.topic_replication_factor)
      STREAMREC_TOPIC_MIN_INSYNC_REPLICAS = tostring(var.topic_min_insync_replicas)
      STREAMREC_REDIS_CLUSTER             = tostring(var.redis_cluster)
      STREAMREC_REDIS_MIN_REPLICAS_ACK    = tostring(var.redis_min_replicas_ack)
      STREAMREC_STORAGE_URL               = var.storage_url
      STREAMREC_HOME                      = "/tmp/streamrec" # the root filesystem is read-only
      STREAMREC_SERVE_HOST                = "0.0.0.0"
      STREAMREC_SERVE_PORT                = tostring(local.api_port)
      STREAMREC_SERVE_WORKERS             = tostring(var.api_workers)
      STREAMREC_STREAM_METRICS_PORT       = tostring(local.stream_port)
    },
    var.environment,
  )
  environment_list = [for k, v in local.environment : { name = k, value = v }]
  secrets          = [{ name = "STREAMREC_REDIS_URL", valueFrom = var.redis_url_secret_arn }]

  # ECS bind mount without a host path = task-local scratch space on Fargate.
  tmp_volume = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
}

resource "aws_ecs_cluster" "this" {
  name = var.name
  tags = var.tags

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE", "FARGATE_SPOT"]
  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

resource "aws_cloudwatch_log_group" "task" {
  for_each          = toset(["api", "stream", "train"])
  name              = "/streamrec/${var.name}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

# --- security groups ---------------------------------------------------------------------
resource "aws_security_group" "tasks" {
  name_prefix = "${var.name}-tasks-"
  description = "streamrec tasks: API port from the load balancer; egress to Kafka, Redis, AWS APIs"
  vpc_id      = var.vpc_id
  tags        = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "api_from_alb" {
  security_group_id            = aws_security_group.tasks.id
  referenced_security_group_id = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
  description                  = "API from the load balancer"
}

resource "aws_vpc_security_group_egress_rule" "tasks_kafka" {
  security_group_id = aws_security_group.tasks.id
  cidr_ipv4         = var.vpc_cidr
  ip_protocol       = "tcp"
  from_port         = 9098
  to_port           = 9098
  description       = "MSK brokers (IAM over TLS)"
}

resource "aws_vpc_security_group_egress_rule" "tasks_redis" {
  security_group_id = aws_security_group.tasks.id
  cidr_ipv4         = var.vpc_cidr
  ip_protocol       = "tcp"
  from_port         = 6379
  to_port           = 6379
  description       = "ElastiCache (TLS)"
}

resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  security_group_id = aws_security_group.tasks.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "AWS APIs over HTTPS (S3, ECR, Secrets Manager, Logs, AMP) via NAT or endpoints"
}

# --- metrics sidecar: scrapes the app's /metrics, remote-writes to Managed Prometheus -------
locals {
  scrape_port = { api = local.api_port, stream = local.stream_port }
  sidecar = { for job, port in local.scrape_port : job => local.metrics ? [{
    name      = "metrics"
    image     = var.adot_image
    essential = false # losing metrics must not take the app down
    environment = [{
      name = "AOT_CONFIG_CONTENT"
      value = yamlencode({
        extensions = { sigv4auth = { region = local.region, service = "aps" } }
        receivers = { prometheus = { config = { scrape_configs = [{
          job_name        = "streamrec-${job}"
          scrape_interval = "15s"
          static_configs  = [{ targets = ["localhost:${port}"] }]
        }] } } }
        exporters = { prometheusremotewrite = {
          endpoint = var.amp_remote_write_url
          auth     = { authenticator = "sigv4auth" }
        } }
        service = {
          extensions = ["sigv4auth"]
          pipelines  = { metrics = { receivers = ["prometheus"], exporters = ["prometheusremotewrite"] } }
        }
      })
    }]
    readonlyRootFilesystem = true
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.task[job].name
        awslogs-region        = local.region
        awslogs-stream-prefix = "metrics"
      }
    }
  }] : [] }
}
