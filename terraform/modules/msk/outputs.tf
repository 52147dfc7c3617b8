output "bootstrap_brokers" {
  description = "Bootstrap servers for IAM auth over TLS (port 9098): STREAMREC_KAFKA_BOOTSTRAP."
  value       = aws_msk_cluster.this.bootstrap_brokers_sasl_iam
}

output "cluster_arn" {
  description = "ARN of the MSK cluster (kafka-cluster:Connect is granted on it)."
  value       = aws_msk_cluster.this.arn
}

output "cluster_name" {
  description = "Name of the MSK cluster (CloudWatch dimension \"Cluster Name\")."
  value       = aws_msk_cluster.this.cluster_name
}

output "topic_arn_prefix" {
  description = "ARN prefix of this cluster's topics; append a topic name or pattern for IAM."
  value       = "${replace(aws_msk_cluster.this.arn, ":cluster/", ":topic/")}/"
}

output "group_arn_prefix" {
  description = "ARN prefix of this cluster's consumer groups; append a group id or pattern for IAM."
  value       = "${replace(aws_msk_cluster.this.arn, ":cluster/", ":group/")}/"
}

output "security_group_id" {
  description = "Security group of the brokers."
  value       = aws_security_group.msk.id
}

output "topics" {
  description = "The topics streamrec creates and their settings (partitions, cleanup policy, retention)."
  value       = local.topics
}

output "topic_partitions" {
  description = "Partitions per event topic: the maximum useful number of stream workers."
  value       = var.topic_partitions
}

output "replication_factor" {
  description = "Replicas per topic: STREAMREC_TOPIC_REPLICATION_FACTOR of the tasks (`streamrec topics` creates the topics)."
  value       = var.replication_factor
}

output "min_insync_replicas" {
  description = "min.insync.replicas: STREAMREC_TOPIC_MIN_INSYNC_REPLICAS of the tasks (set on each topic they create)."
  value       = var.min_insync_replicas
}
