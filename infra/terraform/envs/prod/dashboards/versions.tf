terraform {
  required_version = ">= 1.9"

  required_providers {
    grafana = {
      source  = "grafana/grafana"
      version = ">= 3.0, < 4.0"
    }
  }

  # Partial configuration completed by backend.hcl: the environment's bucket, a key of its own.
  backend "s3" {}
}
