terraform {
  required_version = ">= 1.5.0"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
  }
  # Keep state remote and locked for a real deployment, e.g.:
  # backend "s3" { bucket = "<state bucket>" key = "streamrec/terraform.tfstate" region = "<region>" use_lockfile = true }
}

provider "aws" {
  region = var.region
  default_tags {
    tags = merge({ project = "streamrec", environment = var.environment }, var.tags)
  }
}
