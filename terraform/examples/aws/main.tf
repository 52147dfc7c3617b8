# A small but complete streamrec deployment: MSK + ElastiCache + S3 + ECS Fargate (API,
# stream workers, scheduled training) + Managed Prometheus and CloudWatch alarms, all
# encrypted with one customer-managed key. Copy terraform.tfvars.example to start.

locals {
  name         = "streamrec-${var.environment}"
  topic_prefix = "streamrec"
}

data "aws_caller_identity" "current" {}

data "aws_iam_policy_document" "kms" {
  # A KMS key policy, not an IAM policy: "Resource": "*" in it means "this key" only.
  #checkov:skip=CKV_AWS_111:Key policy: the resource is the key itself; write actions are limited to the account root (AWS's default key policy) and two service principals.
  #checkov:skip=CKV_AWS_356:Key policy: "*" is the only valid resource and denotes this key.
  #checkov:skip=CKV_AWS_109:Key policy: the account-root statement is AWS's default; without it IAM policies cannot grant use of the key and the key becomes unmanageable.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"] # in a key policy, "*" means this key
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    sid       = "CloudWatchLogsEncrypt"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:aws:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:/streamrec/*"]
    }
  }
  statement {
    sid       = "CloudWatchAlarmsPublish" # alarms publish to the encrypted SNS topic
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "streamrec" {
  description             = "streamrec ${var.environment}: S3, MSK, ElastiCache, secrets, logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "streamrec" {
  name          = "alias/${local.name}"
  target_key_id = aws_kms_key.streamrec.key_id
}

module "storage" {
  source      = "../../modules/storage"
  bucket_name = var.bucket_name
  kms_key_arn = aws_kms_key.streamrec.arn
}

module "msk" {
  source                    = "../../modules/msk"
  name                      = local.name
  vpc_id                    = var.vpc_id
  subnet_ids                = var.private_subnet_ids
  client_security_group_ids = [module.ecs.tasks_security_group_id]
  kms_key_arn               = aws_kms_key.streamrec.arn
  topic_prefix              = local.topic_prefix
  topic_partitions          = var.topic_partitions
}

module "redis" {
  source                    = "../../modules/redis"
  name                      = local.name
  vpc_id                    = var.vpc_id
  subnet_ids                = var.private_subnet_ids
  client_security_group_ids = [module.ecs.tasks_security_group_id]
  kms_key_arn               = aws_kms_key.streamrec.arn
  shards                    = var.redis_shards
}

module "observability" {
  source                  = "../../modules/observability"
  name                    = local.name
  kms_key_arn             = aws_kms_key.streamrec.arn
  alarm_emails            = var.alarm_emails
  enable_managed_grafana  = var.enable_managed_grafana
  msk_cluster_name        = module.msk.cluster_name
  consumer_group          = module.ecs.consumer_group
  alb_arn_suffix          = module.ecs.alb_arn_suffix
  target_group_arn_suffix = module.ecs.target_group_arn_suffix
  ecs_cluster_name        = module.ecs.cluster_name
  stream_workers          = module.ecs.stream_workers
}

module "ecs" {
  source                    = "../../modules/ecs"
  name                      = local.name
  vpc_id                    = var.vpc_id
  vpc_cidr                  = var.vpc_cidr
  private_subnet_ids        = var.private_subnet_ids
  public_subnet_ids         = var.public_subnet_ids
  image                     = var.image
  ecr_repository_arn        = var.ecr_repository_arn
  certificate_arn           = var.certificate_arn
  kms_key_arn               = aws_kms_key.streamrec.arn
  kafka_bootstrap           = module.msk.bootstrap_brokers
  msk_cluster_arn           = module.msk.cluster_arn
  topic_arn_prefix          = module.msk.topic_arn_prefix
  group_arn_prefix          = module.msk.group_arn_prefix
  topic_prefix              = local.topic_prefix
  topic_partitions          = module.msk.topic_partitions
  topic_replication_factor  = module.msk.replication_factor
  topic_min_insync_replicas = module.msk.min_insync_replicas
  partitions_per_worker     = var.partitions_per_worker
  redis_url_secret_arn      = module.redis.redis_url_secret_arn
  redis_cluster             = module.redis.cluster_mode
  redis_min_replicas_ack    = module.redis.min_replicas_ack
  bucket_arn                = module.storage.bucket_arn
  storage_prefix            = module.storage.prefix
  storage_url               = module.storage.storage_url
  amp_remote_write_url      = module.observability.prometheus_remote_write_url
  amp_workspace_arn         = module.observability.prometheus_workspace_arn
  api_min_tasks             = var.api_min_tasks
  api_max_tasks             = var.api_max_tasks
  environment               = var.environment_settings
}

# Each Kafka partition's Redis state lives in one hash slot (schemas/redis_keys.py), so a
# shard serves whole partitions: with fewer than ~4 per shard one shard can carry twice the
# load of another. A warning at plan time, not an error: small deployments may accept it.
check "partitions_per_redis_shard" {
  assert {
    condition     = var.topic_partitions >= 4 * var.redis_shards
    error_message = "topic_partitions (${var.topic_partitions}) < 4 x redis_shards (${var.redis_shards}): Redis load spreads unevenly over the shards; use more partitions (e.g. 12 for 3 shards)."
  }
}
