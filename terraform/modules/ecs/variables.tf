variable "name" {
  description = "Name of the ECS cluster and prefix of every resource of this module."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the tasks and the load balancer."
  type        = string
}

variable "vpc_cidr" {
  description = "CIDR of the VPC: tasks may reach brokers and Redis inside it."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets for the tasks (egress through NAT or VPC endpoints)."
  type        = list(string)
}

variable "public_subnet_ids" {
  description = "Public subnets for the internet-facing load balancer."
  type        = list(string)
}

variable "allowed_cidrs" {
  description = "Client CIDRs allowed to call the API through the load balancer."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "image" {
  description = "The streamrec image (built from the repository's Dockerfile), e.g. <account>.dkr.ecr.<region>.amazonaws.com/streamrec:<git sha>."
  type        = string
}

variable "ecr_repository_arn" {
  description = "ECR repository of the image; the execution role may pull only from it (empty: a public registry)."
  type        = string
  default     = ""
}

variable "certificate_arn" {
  description = "ACM certificate of the HTTPS listener."
  type        = string
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key of the bucket, the secrets and the log groups."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the tasks' log groups."
  type        = number
  default     = 365
}

# --- what the tasks connect to -------------------------------------------------------------
variable "kafka_bootstrap" {
  description = "MSK bootstrap servers (IAM auth, port 9098): STREAMREC_KAFKA_BOOTSTRAP."
  type        = string
}

variable "msk_cluster_arn" {
  description = "MSK cluster ARN (kafka-cluster:Connect)."
  type        = string
}

variable "topic_arn_prefix" {
  description = "ARN prefix of the cluster's topics (output of the msk module)."
  type        = string
}

variable "group_arn_prefix" {
  description = "ARN prefix of the cluster's consumer groups (output of the msk module)."
  type        = string
}

variable "topic_prefix" {
  description = "STREAMREC_TOPIC_PREFIX; IAM grants cover <prefix>.* topics and groups only."
  type        = string
}

variable "topic_partitions" {
  description = "Partitions per event topic (STREAMREC_TOPIC_PARTITIONS)."
  type        = number
}

variable "topic_replication_factor" {
  description = "Replicas per topic the tasks create (STREAMREC_TOPIC_REPLICATION_FACTOR; output of the msk module)."
  type        = number
}

variable "topic_min_insync_replicas" {
  description = "min.insync.replicas of the topics the tasks create (STREAMREC_TOPIC_MIN_INSYNC_REPLICAS; output of the msk module)."
  type        = number
}

variable "redis_url_secret_arn" {
  description = "Secrets Manager secret with STREAMREC_REDIS_URL (output of the redis module)."
  type        = string
}

# No defaults: a cluster-mode Redis reached without the flag answers MOVED/CROSSSLOT, so
# every caller states what its Redis is (the redis module's outputs).
variable "redis_cluster" {
  description = "Whether Redis runs in cluster mode (STREAMREC_REDIS_CLUSTER; output cluster_mode of the redis module)."
  type        = bool
}

variable "redis_min_replicas_ack" {
  description = "Replicas that must hold a stream batch (WAIT) before its offsets commit (STREAMREC_REDIS_MIN_REPLICAS_ACK; output of the redis module)."
  type        = number
  validation {
    condition     = var.redis_min_replicas_ack >= 0
    error_message = "redis_min_replicas_ack cannot be negative."
  }
}

variable "bucket_arn" {
  description = "ARN of the snapshot/registry bucket."
  type        = string
}

variable "storage_prefix" {
  description = "Key prefix of streamrec's objects in the bucket."
  type        = string
}

variable "storage_url" {
  description = "STREAMREC_STORAGE_URL (s3://bucket/prefix)."
  type        = string
}

variable "amp_remote_write_url" {
  description = "Amazon Managed Prometheus remote-write URL for the metrics sidecars (empty: no sidecar)."
  type        = string
  default     = ""
}

variable "amp_workspace_arn" {
  description = "Amazon Managed Prometheus workspace ARN (aps:RemoteWrite is granted on it)."
  type        = string
  default     = ""
}

variable "adot_image" {
  description = "AWS Distro for OpenTelemetry collector image of the metrics sidecar."
  type        = string
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.3"
}

variable "environment" {
  description = "Extra STREAMREC_* settings for every task (e.g. Kafka security settings, log level)."
  type        = map(string)
  default     = {}
}

# --- API -----------------------------------------------------------------------------------
variable "api_cpu" {
  description = "vCPU units of one API task (1024 = 1 vCPU)."
  type        = number
  default     = 1024
}

variable "api_memory" {
  description = "Memory (MiB) of one API task; holds serve_model_cache_size models per worker."
  type        = number
  default     = 4096
}

variable "api_workers" {
  description = "uvicorn workers per API task (STREAMREC_SERVE_WORKERS); about one per vCPU."
  type        = number
  default     = 1
}

variable "api_min_tasks" {
  description = "Minimum API tasks (spread over availability zones)."
  type        = number
  default     = 2
}

variable "api_max_tasks" {
  description = "Maximum API tasks the autoscaler may run."
  type        = number
  default     = 10
}

variable "api_requests_per_target" {
  description = "Target of the request-count tracking policy: requests per task per minute."
  type        = number
  default     = 6000
}

variable "api_cpu_target" {
  description = "Target average CPU (%) of the CPU tracking policy."
  type        = number
  default     = 60
}

variable "alb_deletion_protection" {
  description = "Protect the load balancer from deletion (turn off to destroy the stack)."
  type        = bool
  default     = true
}

variable "alb_access_log_bucket" {
  description = "Existing bucket for load balancer access logs (empty: no access logs)."
  type        = string
  default     = ""
}

# --- stream workers ------------------------------------------------------------------------
variable "partitions_per_worker" {
  description = "Partitions each stream worker should own; desired count = ceil(topic_partitions / this). More workers than partitions would idle."
  type        = number
  default     = 3
  validation {
    condition     = var.partitions_per_worker >= 1
    error_message = "partitions_per_worker must be at least 1."
  }
}

variable "stream_cpu" {
  description = "vCPU units of one stream worker."
  type        = number
  default     = 1024
}

variable "stream_memory" {
  description = "Memory (MiB) of one stream worker (snapshot buffers: stream_flush_events)."
  type        = number
  default     = 2048
}

# --- training ------------------------------------------------------------------------------
variable "train_schedule" {
  description = "EventBridge schedule of the training task (cron or rate expression, UTC)."
  type        = string
  default     = "cron(0 3 * * ? *)"
}

variable "train_command" {
  description = "Arguments of the training task after `streamrec`."
  type        = list(string)
  default     = ["train"]
}

variable "train_cpu" {
  description = "vCPU units of the training task."
  type        = number
  default     = 4096
}

variable "train_memory" {
  description = "Memory (MiB) of the training task."
  type        = number
  default     = 16384
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
