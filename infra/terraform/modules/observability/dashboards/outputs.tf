output "dashboards" {
  description = "Dashboard uid by file."
  value       = { for f, d in grafana_dashboard.this : f => d.uid }
}

output "data_sources" {
  description = "Data source uid by region key."
  value       = { for k, d in grafana_data_source.prometheus : k => d.uid }
}
