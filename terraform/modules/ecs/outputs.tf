output "cluster_name" {
  description = "ECS cluster name."
  value       = aws_ecs_cluster.this.name
}

output "api_url" {
  description = "HTTPS URL of the API (point a DNS name covered by the certificate at alb_dns_name)."
  value       = "https://${aws_lb.api.dns_name}"
}

output "alb_dns_name" {
  description = "DNS name of the load balancer."
  value       = aws_lb.api.dns_name
}

output "alb_arn_suffix" {
  description = "Load balancer ARN suffix (CloudWatch dimension LoadBalancer)."
  value       = aws_lb.api.arn_suffix
}

output "target_group_arn_suffix" {
  description = "API target group ARN suffix (CloudWatch dimension TargetGroup)."
  value       = aws_lb_target_group.api.arn_suffix
}

output "tasks_security_group_id" {
  description = "Security group of every streamrec task; MSK and Redis admit it."
  value       = aws_security_group.tasks.id
}

output "stream_workers" {
  description = "Desired count of the stream service: ceil(topic_partitions / partitions_per_worker)."
  value       = local.stream_workers
}

output "consumer_group" {
  description = "Consumer group of the stream workers (<topic_prefix>.streamrec-streams unless STREAMREC_STREAM_APP_ID is overridden)."
  value       = "${var.topic_prefix}.${lookup(var.environment, "STREAMREC_STREAM_APP_ID", "streamrec-streams")}"
}

output "task_role_arns" {
  description = "Task role ARN per component (api, stream, train)."
  value = {
    api    = aws_iam_role.api.arn
    stream = aws_iam_role.stream.arn
    train  = aws_iam_role.train.arn
  }
}

output "train_schedule_rule" {
  description = "EventBridge rule that starts the training task."
  value       = aws_cloudwatch_event_rule.train.name
}
