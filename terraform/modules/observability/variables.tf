variable "name" {
  description = "Prefix of every resource of this module."
  type        = string
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for the workspace, the alarm topic and the log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the Prometheus workspace's log group."
  type        = number
  default     = 365
}

variable "alarm_emails" {
  description = "Addresses subscribed to the alarm topic (each must confirm by email)."
  type        = list(string)
  default     = []
}

variable "enable_managed_grafana" {
  description = "Create an Amazon Managed Grafana workspace (needs IAM Identity Center in the account)."
  type        = bool
  default     = false
}

variable "msk_cluster_name" {
  description = "MSK cluster name (dimension of the consumer-lag alarm)."
  type        = string
}

variable "consumer_group" {
  description = "Consumer group of the stream workers."
  type        = string
}

variable "max_consumer_lag_seconds" {
  description = "Alarm when the stream workers are this far behind (EstimatedMaxTimeLag): features go stale."
  type        = number
  default     = 60
}

variable "alb_arn_suffix" {
  description = "Load balancer ARN suffix (output of the ecs module)."
  type        = string
}

variable "target_group_arn_suffix" {
  description = "API target group ARN suffix (output of the ecs module)."
  type        = string
}

variable "api_p99_seconds" {
  description = "Alarm when the API's p99 latency at the load balancer exceeds this."
  type        = number
  default     = 0.2
}

variable "api_5xx_per_minute" {
  description = "Alarm when the API returns more 5xx per minute than this (it should return none)."
  type        = number
  default     = 5
}

variable "ecs_cluster_name" {
  description = "ECS cluster name (dimension of the stream-worker alarm)."
  type        = string
}

variable "stream_workers" {
  description = "Desired stream workers; alarm when fewer run."
  type        = number
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
