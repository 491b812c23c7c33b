terraform {
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80, < 6.0"
    }
    grafana = {
      source  = "grafana/grafana"
      version = ">= 3.0, < 4.0"
    }
  }
}
