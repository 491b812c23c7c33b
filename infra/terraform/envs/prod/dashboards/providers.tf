# Configured from values known before the plan (the environment root is applied first), which
# is why this is a root of its own.
provider "grafana" {
  url  = var.grafana_url
  auth = var.grafana_token
}
