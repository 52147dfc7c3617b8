# One bucket holds both the Parquet snapshots (<prefix>/events/..., written by the stream
# workers) and the model registry (<prefix>/models/..., immutable versions + aliases.json
# replaced by conditional writes). Versioned, KMS-encrypted, private, TLS-only.

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is a disaster-recovery choice per deployment (second region, second key); snapshots can be re-derived from Kafka within its retention.
  #checkov:skip=CKV2_AWS_62:Nothing consumes object events; the registry is polled through aliases.json.
  #checkov:skip=CKV_AWS_18:Access logging is wired by aws_s3_bucket_logging below when var.access_log_bucket is set (the log bucket is an account-level resource, not created here).
  bucket = var.bucket_name
  tags   = var.tags
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true # one KMS call per object-hour, not per request
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_logging" "this" {
  count         = var.access_log_bucket == "" ? 0 : 1
  bucket        = aws_s3_bucket.this.id
  target_bucket = var.access_log_bucket
  target_prefix = "s3/${var.bucket_name}/"
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  # Versioning must be on before noncurrent-version rules mean anything.
  depends_on = [aws_s3_bucket_versioning.this]

  rule {
    id     = "expire-old-snapshots"
    status = "Enabled"
    filter {
      prefix = "${var.prefix}/events/"
    }
    dynamic "transition" {
      for_each = var.snapshot_archive_days > 0 ? [var.snapshot_archive_days] : []
      content {
        days          = transition.value
        storage_class = "GLACIER_IR"
      }
    }
    expiration {
      days = var.snapshot_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  # Model versions are never expired by age (the registry decides what to keep);
  # only the superseded copies of overwritten objects (aliases.json) go.
  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.this.arn, "${aws_s3_bucket.this.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = data.aws_iam_policy_document.bucket.json
  # The public access block must exist first, or the policy briefly stands alone.
  depends_on = [aws_s3_bucket_public_access_block.this]
}
