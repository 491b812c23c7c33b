output "roles" {
  description = "Writer or reader, per region key: what primary_region decided."
  value       = local.roles
}

output "writer" {
  description = "The region whose cluster writes and its endpoint (what every service connects to)."
  value       = terraform_data.writer.output
}

output "storefront_hosts" {
  description = "Per region key, the host name shoppers use."
  value       = module.edge.storefront_hosts
}

output "api_host" {
  description = "The latency-routed API name (webhooks, server-to-server clients)."
  value       = module.edge.api_host
}

output "app_secrets" {
  description = "Per region key, the Secrets Manager secret operators fill (DATABASE_USER, STRIPE_API_KEY, ...)."
  value = {
    us = module.service_us.app_secret_arn
    eu = module.service_eu.app_secret_arn
  }
}

output "alert_topics" {
  description = "Per region key, the SNS topic its alert manager publishes to."
  value = {
    us = module.observability_us.alerts_topic_arn
    eu = module.observability_eu.alerts_topic_arn
  }
}

# What the dashboards root (./dashboards) is configured with: the pipeline passes these on.
output "grafana_url" {
  description = "The environment's Grafana."
  value       = module.grafana.url
}

output "grafana_token" {
  description = "Terraform's token in Grafana (the dashboards root's provider)."
  value       = module.grafana.token
  sensitive   = true
}

output "prometheus" {
  description = "Per region key, its AWS region and Prometheus workspace endpoint (Grafana's data sources)."
  value = {
    us = { aws_region = var.regions["us"].aws_region, endpoint = module.observability_us.prometheus_endpoint }
    eu = { aws_region = var.regions["eu"].aws_region, endpoint = module.observability_eu.prometheus_endpoint }
  }
}
