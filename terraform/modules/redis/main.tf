# ElastiCache for Redis in cluster mode: sharded (num_node_groups), replicated across AZs,
# encrypted at rest and in transit, AUTH token generated into Secrets Manager.
#
# Cluster mode needs a cluster-aware client (redis.cluster.RedisCluster) and keys of one
# multi-key operation in one hash slot; see the README "Scaling out" section. The outputs
# cluster_mode and min_replicas_ack tell the tasks so (STREAMREC_REDIS_CLUSTER and
# STREAMREC_REDIS_MIN_REPLICAS_ACK): they follow what is deployed here, not a second setting.

locals {
  # One place for the group's parameter group and the flag the tasks get from it.
  parameter_group_name = "default.redis7.cluster.on"
  cluster_mode         = endswith(local.parameter_group_name, ".cluster.on")
}

data "aws_secretsmanager_random_password" "auth_token" {
  password_length     = 64
  exclude_punctuation = true # ElastiCache AUTH tokens allow only a few symbols
}

resource "aws_secretsmanager_secret" "auth_token" {
  #checkov:skip=CKV2_AWS_57:Rotating an ElastiCache AUTH token needs a ROTATE/SET update of the replication group; done as a planned change (README), not by a rotation Lambda.
  name_prefix             = "${var.name}/redis-auth-token-"
  description             = "AUTH token of the ${var.name} ElastiCache cluster"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "auth_token" {
  secret_id     = aws_secretsmanager_secret.auth_token.id
  secret_string = data.aws_secretsmanager_random_password.auth_token.random_password
  lifecycle {
    # The data source draws a new password on every plan; keep the one first stored.
    ignore_changes = [secret_string]
  }
}

resource "aws_security_group" "redis" {
  name_prefix = "${var.name}-redis-"
  description = "ElastiCache ${var.name}: TLS on 6379 from the streamrec tasks only"
  vpc_id      = var.vpc_id
  tags        = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  for_each                     = toset(var.client_security_group_ids)
  security_group_id            = aws_security_group.redis.id
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  description                  = "Redis clients (TLS + AUTH)"
}

resource "aws_elasticache_subnet_group" "this" {
  name       = "${var.name}-redis"
  subnet_ids = var.subnet_ids
  tags       = var.tags
}

resource "aws_cloudwatch_log_group" "slow_log" {
  name              = "/streamrec/${var.name}/redis-slow-log"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_elasticache_replication_group" "this" {
  replication_group_id = var.name
  description          = "streamrec online features (${var.name})"
  engine               = "redis"
  engine_version       = var.engine_version
  node_type            = var.node_type
  port                 = 6379
  # A ".cluster.on" family (see the locals) is what makes this a cluster-mode-enabled group.
  parameter_group_name       = local.parameter_group_name
  num_node_groups            = var.shards
  replicas_per_node_group    = var.replicas_per_shard
  automatic_failover_enabled = true
  multi_az_enabled           = true
  subnet_group_name          = aws_elasticache_subnet_group.this.name
  security_group_ids         = [aws_security_group.redis.id]

  at_rest_encryption_enabled = true
  kms_key_id                 = var.kms_key_arn
  transit_encryption_enabled = true
  auth_token                 = aws_secretsmanager_secret_version.auth_token.secret_string
  auth_token_update_strategy = "ROTATE"

  snapshot_retention_limit   = var.snapshot_retention_days
  auto_minor_version_upgrade = true
  apply_immediately          = false
  tags                       = var.tags

  log_delivery_configuration {
    destination      = aws_cloudwatch_log_group.slow_log.name
    destination_type = "cloudwatch-logs"
    log_format       = "json"
    log_type         = "slow-log"
  }
}

# What the tasks get as STREAMREC_REDIS_URL (ECS injects it from here): the TLS scheme
# (rediss:// while transit encryption is on), the token as the URL's password (alphanumeric,
# nothing to percent-encode), the configuration endpoint (any node: the cluster client
# discovers the shards from it). Kept apart from the raw token so Settings need no extra
# field; both secrets hold the same token.
resource "aws_secretsmanager_secret" "redis_url" {
  #checkov:skip=CKV2_AWS_57:Derived from the AUTH token secret; it changes when that token is rotated (see above).
  name_prefix             = "${var.name}/redis-url-"
  description             = "STREAMREC_REDIS_URL for the ${var.name} ElastiCache cluster"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = 7
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "redis_url" {
  secret_id = aws_secretsmanager_secret.redis_url.id
  secret_string = format(
    "%s://:%s@%s:%d/0",
    aws_elasticache_replication_group.this.transit_encryption_enabled ? "rediss" : "redis",
    aws_secretsmanager_secret_version.auth_token.secret_string,
    aws_elasticache_replication_group.this.configuration_endpoint_address,
    aws_elasticache_replication_group.this.port,
  )
}
