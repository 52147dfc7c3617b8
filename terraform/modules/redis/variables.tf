variable "name" {
  description = "Replication group id and prefix of the companion resources (lowercase, <= 40 characters)."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the cache nodes."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (distinct availability zones) for the cache nodes."
  type        = list(string)
}

variable "client_security_group_ids" {
  description = "Security groups of the clients (ECS tasks) allowed on port 6379."
  type        = list(string)
}

variable "engine_version" {
  description = "Redis OSS engine version (the local stack runs Debian's 7.0)."
  type        = string
  default     = "7.1"
}

variable "node_type" {
  description = "Cache node type; per-user history and item stats are small, memory grows with active users."
  type        = string
  default     = "cache.r7g.large"
}

variable "shards" {
  description = "Node groups (shards) of the cluster: scale out when memory or write throughput per shard runs out."
  type        = number
  default     = 2
}

variable "replicas_per_shard" {
  description = "Read replicas per shard (1+ for automatic failover across availability zones)."
  type        = number
  default     = 1
  validation {
    condition     = var.replicas_per_shard >= 1
    error_message = "Automatic failover needs at least one replica per shard."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for data at rest, the secrets and the log group."
  type        = string
}

variable "snapshot_retention_days" {
  description = "Daily snapshots kept; features are rebuilt from Kafka/S3 anyway, snapshots shorten recovery."
  type        = number
  default     = 3
}

variable "log_retention_days" {
  description = "Retention of the slow-log group in CloudWatch Logs."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
