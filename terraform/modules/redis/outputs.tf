output "configuration_endpoint" {
  description = "Cluster configuration endpoint (host); clients discover the shards from it."
  value       = aws_elasticache_replication_group.this.configuration_endpoint_address
}

output "port" {
  description = "Redis port (TLS)."
  value       = aws_elasticache_replication_group.this.port
}

output "auth_token_secret_arn" {
  description = "Secrets Manager secret holding the AUTH token."
  value       = aws_secretsmanager_secret.auth_token.arn
}

output "redis_url_secret_arn" {
  description = "Secrets Manager secret holding STREAMREC_REDIS_URL (rediss://:token@endpoint:6379/0)."
  value       = aws_secretsmanager_secret.redis_url.arn
}

output "replication_group_id" {
  description = "Replication group id (CloudWatch dimension for alarms)."
  value       = aws_elasticache_replication_group.this.id
}

output "security_group_id" {
  description = "Security group of the cache nodes."
  value       = aws_security_group.redis.id
}

output "cluster_mode" {
  description = "Whether the group runs in cluster mode: STREAMREC_REDIS_CLUSTER of every task (the cluster protocol, from any node)."
  value       = local.cluster_mode
}

output "min_replicas_ack" {
  description = "STREAMREC_REDIS_MIN_REPLICAS_ACK: replicas (WAIT) that must hold a stream batch before its offsets commit; 1 when shards have a replica, so a failover loses nothing committed."
  value       = var.replicas_per_shard >= 1 ? 1 : 0
}
