terraform {
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80, < 6.0"
    }
  }

  # Partial configuration: bucket, key, region and lock table come from backend.hcl
  # (`terraform init -backend-config=backend.hcl`), one per environment.
  backend "s3" {}
}
