output "alb_dns_name" {
  description = "The load balancer's name (origin of the edge, target of the latency records)."
  value       = aws_lb.this.dns_name
}

output "alb_zone_id" {
  description = "The load balancer's hosted zone (alias records)."
  value       = aws_lb.this.zone_id
}

output "api_origin" {
  description = "The name CloudFront and Route 53 use for this region's API (TLS matches it)."
  value       = "api-${var.region_key}.${var.domain}"
}

output "cluster_name" {
  description = "The ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "app_secret_arn" {
  description = "The region's application secret (operators write its values)."
  value       = aws_secretsmanager_secret.app.arn
}

output "task_role_arn" {
  description = "The role the processes run as."
  value       = aws_iam_role.task.arn
}

output "container_environment" {
  description = "The plain environment every process gets (what a failover changes is visible here)."
  value       = local.environment
}
