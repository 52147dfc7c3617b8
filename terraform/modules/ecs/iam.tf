# Least privilege: one execution role (pull the image, write logs, read the one secret) and
# one task role per component with exactly the Kafka topics, S3 prefixes and KMS use it needs.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# ListBucket conditions use StringLikeIfExists: S3Store.check() is a HeadBucket, which is
# authorised by s3:ListBucket but carries no s3:prefix key (a plain StringLike would deny it).
locals {
  topics      = "${var.topic_arn_prefix}${var.topic_prefix}."
  objects     = "${var.bucket_arn}/${var.storage_prefix}"
  all_topics  = "${local.topics}*"
  all_groups  = "${var.group_arn_prefix}${var.topic_prefix}.*"
  log_streams = [for g in aws_cloudwatch_log_group.task : "${g.arn}:*"]
}

# --- execution role (used by the ECS agent, not by our code) --------------------------------
data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = local.log_streams
  }
  statement {
    sid       = "RedisUrlSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.redis_url_secret_arn]
  }
  statement {
    sid       = "DecryptSecret"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
  dynamic "statement" {
    for_each = var.ecr_repository_arn == "" ? [] : [1]
    content {
      sid       = "PullImage"
      actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
      resources = [var.ecr_repository_arn]
    }
  }
  dynamic "statement" {
    for_each = var.ecr_repository_arn == "" ? [] : [1]
    content {
      sid       = "EcrLogin"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"] # this action has no resource-level permissions
    }
  }
}

resource "aws_iam_role" "execution" {
  name_prefix        = "${var.name}-exec-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "execution" {
  name   = "execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# --- shared statements ------------------------------------------------------------------------
data "aws_iam_policy_document" "common" {
  statement {
    sid       = "KafkaConnect"
    actions   = ["kafka-cluster:Connect", "kafka-cluster:DescribeCluster", "kafka-cluster:WriteDataIdempotently"]
    resources = [var.msk_cluster_arn]
  }
  statement {
    sid       = "KmsForS3"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }
  dynamic "statement" {
    for_each = local.metrics ? [1] : []
    content {
      sid       = "RemoteWriteMetrics"
      actions   = ["aps:RemoteWrite"]
      resources = [var.amp_workspace_arn]
    }
  }
}

# --- API: serves from the registry, logs requests/feedback to Kafka, may move aliases -------
data "aws_iam_policy_document" "api" {
  source_policy_documents = [data.aws_iam_policy_document.common.json]
  statement {
    sid     = "ProduceRequestLogsAndFeedback"
    actions = ["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"]
    resources = [
      "${local.topics}reco_requests",
      "${local.topics}reco_responses",
      "${local.topics}feedback",
    ]
  }
  statement {
    sid       = "ListRegistry"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
    condition {
      test     = "StringLikeIfExists"
      variable = "s3:prefix"
      values   = ["${var.storage_prefix}/models/*"]
    }
  }
  statement {
    sid       = "ReadRegistry"
    actions   = ["s3:GetObject"]
    resources = ["${local.objects}/models/*"]
  }
  statement {
    sid       = "MoveAliases" # admin promote/rollback: conditional PUT of aliases.json only
    actions   = ["s3:PutObject"]
    resources = ["${local.objects}/models/*/aliases.json"]
  }
}

resource "aws_iam_role" "api" {
  name_prefix        = "${var.name}-api-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "api" {
  name   = "api"
  role   = aws_iam_role.api.id
  policy = data.aws_iam_policy_document.api.json
}

# --- stream workers: consume every event topic, write features (Redis) and snapshots --------
data "aws_iam_policy_document" "stream" {
  source_policy_documents = [data.aws_iam_policy_document.common.json]
  statement {
    sid = "ConsumeAndCreateTopics" # the worker creates missing topics at start (idempotent)
    actions = [
      "kafka-cluster:DescribeTopic",
      "kafka-cluster:ReadData",
      "kafka-cluster:CreateTopic",
      "kafka-cluster:DescribeTopicDynamicConfiguration",
    ]
    resources = [local.all_topics]
  }
  statement {
    sid       = "DeadLetters"
    actions   = ["kafka-cluster:WriteData"]
    resources = ["${local.topics}dead_letter"]
  }
  statement {
    sid       = "ConsumerGroup"
    actions   = ["kafka-cluster:AlterGroup", "kafka-cluster:DescribeGroup"]
    resources = [local.all_groups]
  }
  statement {
    sid       = "ListSnapshots"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
    condition {
      test     = "StringLikeIfExists"
      variable = "s3:prefix"
      values   = ["${var.storage_prefix}/events/*"]
    }
  }
  statement {
    sid       = "WriteSnapshots"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${local.objects}/events/*"]
  }
}

resource "aws_iam_role" "stream" {
  name_prefix        = "${var.name}-stream-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "stream" {
  name   = "stream"
  role   = aws_iam_role.stream.id
  policy = data.aws_iam_policy_document.stream.json
}

# --- trainer: reads snapshots and the catalog, publishes immutable model versions ----------
data "aws_iam_policy_document" "train" {
  source_policy_documents = [data.aws_iam_policy_document.common.json]
  statement {
    sid       = "ReadCatalog"
    actions   = ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"]
    resources = ["${local.topics}catalog"]
  }
  statement {
    sid       = "CatalogReaderGroup"
    actions   = ["kafka-cluster:AlterGroup", "kafka-cluster:DescribeGroup"]
    resources = [local.all_groups]
  }
  statement {
    sid       = "ListSnapshotsAndRegistry"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
    condition {
      test     = "StringLikeIfExists"
      variable = "s3:prefix"
      values   = ["${var.storage_prefix}/events/*", "${var.storage_prefix}/models/*"]
    }
  }
  statement {
    sid       = "ReadSnapshots"
    actions   = ["s3:GetObject"]
    resources = ["${local.objects}/events/*"]
  }
  statement {
    sid       = "PublishModels"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${local.objects}/models/*"]
  }
}

resource "aws_iam_role" "train" {
  name_prefix        = "${var.name}-train-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "train" {
  name   = "train"
  role   = aws_iam_role.train.id
  policy = data.aws_iam_policy_document.train.json
}
