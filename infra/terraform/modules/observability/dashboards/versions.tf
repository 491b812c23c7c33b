terraform {
  required_version = ">= 1.9"

  required_providers {
    grafana = {
      source  = "grafana/grafana"
      version = ">= 3.0, < 4.0"
    }
  }
}
