output "storefront_hosts" {
  description = "Per region key, the host name shoppers use (<region>.<domain>)."
  value       = { for k, r in aws_route53_record.storefront : k => r.fqdn }
}

output "api_host" {
  description = "The latency-routed API name for webhooks and server-to-server clients."
  value       = "api.${var.domain}"
}

output "distribution_ids" {
  description = "Per region key, its CloudFront distribution."
  value       = { for k, d in aws_cloudfront_distribution.this : k => d.id }
}

output "health_check_ids" {
  description = "Per region key, the Route 53 health check of its API."
  value       = { for k, h in aws_route53_health_check.api : k => h.id }
}
