variable "name" {
  description = "Prefix of every name, e.g. dotshop-prod."
  type        = string
}

variable "prometheus" {
  description = "Per region key, its Prometheus workspace (Grafana's role may query each)."
  type = map(object({
    workspace_arn = string
  }))
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
}
