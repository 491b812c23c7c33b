variable "grafana_url" {
  description = "The environment's Grafana (the environment root's output grafana_url; the pipeline passes it as TF_VAR_grafana_url)."
  type        = string
}

variable "grafana_token" {
  description = "Terraform's token in that Grafana (output grafana_token)."
  type        = string
  sensitive   = true
}

variable "prometheus" {
  description = "Per region key, its AWS region and Prometheus endpoint (output prometheus)."
  type = map(object({
    aws_region = string
    endpoint   = string
  }))
}
