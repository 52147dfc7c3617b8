output "bucket" {
  description = "Bucket name."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "Bucket ARN (IAM policies scope to it and to <arn>/<prefix>/*)."
  value       = aws_s3_bucket.this.arn
}

output "prefix" {
  description = "Key prefix of streamrec's objects."
  value       = var.prefix
}

output "storage_url" {
  description = "STREAMREC_STORAGE_URL for every task."
  value       = "s3://${aws_s3_bucket.this.id}/${var.prefix}"
}
