variable "name" {
  description = "Name of the MSK cluster and prefix of its companion resources."
  type        = string
}

variable "vpc_id" {
  description = "VPC the brokers live in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets, one per availability zone (2 or 3); brokers spread over them."
  type        = list(string)
  validation {
    condition     = length(var.subnet_ids) >= 2 && length(var.subnet_ids) <= 3
    error_message = "MSK needs 2 or 3 subnets in distinct availability zones."
  }
}

variable "client_security_group_ids" {
  description = "Security groups of the clients (ECS tasks) allowed to reach the brokers on 9098 (IAM over TLS)."
  type        = list(string)
}

variable "kafka_version" {
  description = "MSK Apache Kafka version. The local stack runs 4.1.1 (KRaft); the client protocol is compatible with any 3.x broker."
  type        = string
  default     = "3.9.x"
}

variable "broker_instance_type" {
  description = "Broker instance type; kafka.m7g.large handles tens of MB/s per broker."
  type        = string
  default     = "kafka.m7g.large"
}

variable "brokers_per_az" {
  description = "Brokers per availability zone (total = brokers_per_az * number of subnets)."
  type        = number
  default     = 1
}

variable "ebs_volume_gb" {
  description = "EBS storage per broker in GiB; size it for retention x ingest rate x replication factor / brokers."
  type        = number
  default     = 100
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for data at rest and the broker log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the broker log group in CloudWatch Logs."
  type        = number
  default     = 365
}

variable "topic_prefix" {
  description = "The {team} in {team}.watch: STREAMREC_TOPIC_PREFIX of every task."
  type        = string
  default     = "streamrec"
}

variable "topic_partitions" {
  description = "Partitions per event topic (STREAMREC_TOPIC_PARTITIONS): the ceiling on stream-worker parallelism."
  type        = number
  default     = 12
}

variable "replication_factor" {
  description = "Replicas of every topic (STREAMREC_TOPIC_REPLICATION_FACTOR of the tasks, default.replication.factor of the brokers)."
  type        = number
  default     = 3
}

variable "min_insync_replicas" {
  description = "Replicas an acks=all write needs (STREAMREC_TOPIC_MIN_INSYNC_REPLICAS; min.insync.replicas of the brokers and of each topic)."
  type        = number
  default     = 2
  validation {
    condition     = var.min_insync_replicas >= 1
    error_message = "min_insync_replicas must be at least 1."
  }
}

variable "topic_retention_ms" {
  description = "Retention of the event topics (STREAMREC_TOPIC_RETENTION_MS); snapshots in S3 keep the history."
  type        = number
  default     = 604800000
}

variable "enhanced_monitoring" {
  description = "MSK CloudWatch metrics level: DEFAULT, PER_BROKER, PER_TOPIC_PER_BROKER or PER_TOPIC_PER_PARTITION (costs more)."
  type        = string
  default     = "PER_BROKER"
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
