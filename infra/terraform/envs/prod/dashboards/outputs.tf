output "dashboards" {
  description = "Dashboard uid by file."
  value       = module.dashboards.dashboards
}
