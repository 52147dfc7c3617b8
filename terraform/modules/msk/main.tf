# Amazon MSK for the event log. Clients authenticate with IAM (SASL/OAUTHBEARER over TLS,
# port 9098): no shared passwords, and the task roles grant access per topic and group.

locals {
  # The topics streamrec creates (schemas/topics.py; `streamrec topics` or the stream worker
  # creates them at start-up, idempotently). Terraform does not create topics: the AWS
  # provider has no topic resource, and the app owns its topics' settings. Documented here
  # (and output) so capacity planning and IAM see the same list.
  event_topic = {
    partitions     = var.topic_partitions
    cleanup_policy = "delete"
    retention_ms   = var.topic_retention_ms
  }
  topics = {
    "${var.topic_prefix}.watch"          = local.event_topic
    "${var.topic_prefix}.rate"           = local.event_topic
    "${var.topic_prefix}.reco_requests"  = local.event_topic
    "${var.topic_prefix}.reco_responses" = local.event_topic
    "${var.topic_prefix}.feedback"       = local.event_topic
    # Dead letters keep arrival order, so one partition.
    "${var.topic_prefix}.dead_letter" = merge(local.event_topic, { partitions = 1 })
    # The catalog is state: latest record per item, compacted, never deleted by age.
    "${var.topic_prefix}.catalog" = { partitions = 1, cleanup_policy = "compact", retention_ms = -1 }
  }
  broker_count = length(var.subnet_ids) * var.brokers_per_az
}

resource "aws_security_group" "msk" {
  name_prefix = "${var.name}-msk-"
  description = "MSK brokers of ${var.name}: IAM/TLS from the streamrec tasks only"
  vpc_id      = var.vpc_id
  tags        = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  for_each                     = toset(var.client_security_group_ids)
  security_group_id            = aws_security_group.msk.id
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 9098
  to_port                      = 9098
  description                  = "Kafka clients (SASL/IAM over TLS)"
}

resource "aws_msk_configuration" "this" {
  name           = "${var.name}-config"
  kafka_versions = [var.kafka_version]
  description    = "streamrec broker defaults"
  # Durable by default: 3 replicas, acks=all needs 2 in sync; topics are created by the
  # app (auto-create off, so a typo in a topic name fails instead of creating a topic) with
  # the same two numbers (outputs -> STREAMREC_TOPIC_REPLICATION_FACTOR / _MIN_INSYNC_REPLICAS).
  server_properties = <<-EOT
    auto.create.topics.enable=false
    default.replication.factor=${var.replication_factor}
    min.insync.replicas=${var.min_insync_replicas}
    num.partitions=${var.topic_partitions}
    unclean.leader.election.enable=false
    log.retention.ms=${var.topic_retention_ms}
  EOT

  lifecycle {
    precondition {
      # More replicas than brokers and topic creation fails; min ISR = replicas and one
      # broker down (a rolling MSK patch) stops every acks=all producer.
      condition     = var.replication_factor <= local.broker_count && var.min_insync_replicas < var.replication_factor
      error_message = "Need min_insync_replicas < replication_factor <= brokers (subnets x brokers_per_az)."
    }
  }
}

resource "aws_cloudwatch_log_group" "broker" {
  name              = "/streamrec/${var.name}/msk"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

resource "aws_msk_cluster" "this" {
  cluster_name           = var.name
  kafka_version          = var.kafka_version
  number_of_broker_nodes = local.broker_count
  enhanced_monitoring    = var.enhanced_monitoring
  tags                   = var.tags

  broker_node_group_info {
    instance_type   = var.broker_instance_type
    client_subnets  = var.subnet_ids
    security_groups = [aws_security_group.msk.id]
    storage_info {
      ebs_storage_info {
        volume_size = var.ebs_volume_gb
      }
    }
    connectivity_info {
      public_access {
        type = "DISABLED"
      }
    }
  }

  encryption_info {
    encryption_at_rest_kms_key_arn = var.kms_key_arn
    encryption_in_transit {
      client_broker = "TLS"
      in_cluster    = true
    }
  }

  client_authentication {
    unauthenticated = false
    sasl {
      iam = true
    }
  }

  configuration_info {
    arn      = aws_msk_configuration.this.arn
    revision = aws_msk_configuration.this.latest_revision
  }

  # Brokers expose Prometheus endpoints (JMX exporter 11001, node exporter 11002) that
  # Amazon Managed Prometheus / the ADOT collector scrape.
  open_monitoring {
    prometheus {
      jmx_exporter {
        enabled_in_broker = true
      }
      node_exporter {
        enabled_in_broker = true
      }
    }
  }

  logging_info {
    broker_logs {
      cloudwatch_logs {
        enabled   = true
        log_group = aws_cloudwatch_log_group.broker.name
      }
    }
  }
}
