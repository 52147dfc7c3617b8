output "prometheus_workspace_arn" {
  description = "Amazon Managed Prometheus workspace ARN."
  value       = aws_prometheus_workspace.this.arn
}

output "prometheus_remote_write_url" {
  description = "Remote-write URL the metrics sidecars push to."
  value       = "${aws_prometheus_workspace.this.prometheus_endpoint}api/v1/remote_write"
}

output "prometheus_query_url" {
  description = "Query endpoint (Grafana data source URL)."
  value       = aws_prometheus_workspace.this.prometheus_endpoint
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms."
  value       = aws_sns_topic.alarms.arn
}

output "grafana_url" {
  description = "Managed Grafana URL (empty unless enable_managed_grafana)."
  value       = var.enable_managed_grafana ? "https://${aws_grafana_workspace.this[0].endpoint}" : ""
}
