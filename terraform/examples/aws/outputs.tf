output "api_url" {
  description = "HTTPS endpoint of the recommendation API."
  value       = module.ecs.api_url
}

output "kafka_bootstrap" {
  description = "MSK bootstrap servers (IAM auth over TLS)."
  value       = module.msk.bootstrap_brokers
}

output "topics" {
  description = "Topics and their settings as streamrec creates them."
  value       = module.msk.topics
}

output "redis_configuration_endpoint" {
  description = "ElastiCache configuration endpoint."
  value       = module.redis.configuration_endpoint
}

output "redis_url_secret_arn" {
  description = "Secret holding STREAMREC_REDIS_URL."
  value       = module.redis.redis_url_secret_arn
}

output "storage_url" {
  description = "STREAMREC_STORAGE_URL of the deployment."
  value       = module.storage.storage_url
}

output "stream_workers" {
  description = "Stream workers running (tied to the partition count)."
  value       = module.ecs.stream_workers
}

output "prometheus_query_url" {
  description = "Managed Prometheus query endpoint."
  value       = module.observability.prometheus_query_url
}

output "grafana_url" {
  description = "Managed Grafana URL (if enabled)."
  value       = module.observability.grafana_url
}

output "alarm_topic_arn" {
  description = "SNS topic the alarms publish to."
  value       = module.observability.alarm_topic_arn
}
