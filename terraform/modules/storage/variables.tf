variable "bucket_name" {
  description = "Name of the bucket for snapshots and the model registry (globally unique)."
  type        = string
}

variable "prefix" {
  description = "Key prefix of streamrec's objects: STREAMREC_STORAGE_URL = s3://<bucket>/<prefix>."
  type        = string
  default     = "streamrec"
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for server-side encryption (SSE-KMS with a bucket key)."
  type        = string
}

variable "snapshot_retention_days" {
  description = "Days Parquet event snapshots (<prefix>/events/) are kept; training reads the newest window."
  type        = number
  default     = 180
}

variable "snapshot_archive_days" {
  description = "Days after which snapshots move to S3 Glacier Instant Retrieval (must be < snapshot_retention_days; 0 disables)."
  type        = number
  default     = 30
}

variable "noncurrent_version_days" {
  description = "Days overwritten/deleted object versions are kept (undo window, e.g. for aliases.json)."
  type        = number
  default     = 30
}

variable "access_log_bucket" {
  description = "Existing bucket receiving S3 server access logs (empty: no access logging)."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Tags applied to every resource."
  type        = map(string)
  default     = {}
}
