variable "region" {
  description = "AWS region of the whole stack."
  type        = string
  default     = "eu-west-1"
}

variable "environment" {
  description = "Environment name (prod, staging...); prefixes every resource name."
  type        = string
  default     = "prod"
}

variable "vpc_id" {
  description = "Existing VPC (this example does not create networking)."
  type        = string
}

variable "vpc_cidr" {
  description = "CIDR of that VPC."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets in 2 or 3 availability zones (brokers, cache nodes, tasks); they need NAT or VPC endpoints for AWS APIs."
  type        = list(string)
}

variable "public_subnet_ids" {
  description = "Public subnets for the API load balancer."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate for the API's HTTPS listener."
  type        = string
}

variable "image" {
  description = "streamrec image URI (docker build -t <uri> . && docker push <uri>)."
  type        = string
}

variable "ecr_repository_arn" {
  description = "ECR repository of the image (empty if the image is public)."
  type        = string
  default     = ""
}

variable "bucket_name" {
  description = "Globally unique name of the snapshot/registry bucket."
  type        = string
}

variable "topic_partitions" {
  description = "Partitions per event topic; the stream workers scale up to this many."
  type        = number
  default     = 12
}

variable "partitions_per_worker" {
  description = "Partitions per stream worker (desired workers = ceil(partitions / this))."
  type        = number
  default     = 3
}

variable "redis_shards" {
  description = "ElastiCache shards (node groups); keep topic_partitions >= 4 x this (a check warns)."
  type        = number
  default     = 2
}

variable "api_min_tasks" {
  description = "Minimum API tasks."
  type        = number
  default     = 2
}

variable "api_max_tasks" {
  description = "Maximum API tasks."
  type        = number
  default     = 10
}

variable "environment_settings" {
  description = "Extra STREAMREC_* settings for every task."
  type        = map(string)
  default     = {}
}

variable "alarm_emails" {
  description = "Who gets the alarms."
  type        = list(string)
  default     = []
}

variable "enable_managed_grafana" {
  description = "Create a Managed Grafana workspace (needs IAM Identity Center)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Extra tags on every resource."
  type        = map(string)
  default     = {}
}
