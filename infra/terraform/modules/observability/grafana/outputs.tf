output "url" {
  description = "The Grafana workspace's URL."
  value       = "https://${aws_grafana_workspace.this.endpoint}"
}

output "token" {
  description = "Terraform's service account token (configures the grafana provider of the dashboards root)."
  value       = aws_grafana_workspace_service_account_token.terraform.key
  sensitive   = true
}
