output "cluster_arn" {
  description = "This region's cluster (the switchover target when this region becomes primary)."
  value       = aws_rds_cluster.this.arn
}

output "cluster_id" {
  description = "This region's cluster identifier."
  value       = aws_rds_cluster.this.id
}

output "writer_endpoint" {
  description = "The cluster endpoint: it accepts writes only while this region's cluster is the global writer."
  value       = aws_rds_cluster.this.endpoint
}

output "reader_endpoint" {
  description = "The local reader endpoint (catalog reads that may be slightly stale)."
  value       = aws_rds_cluster.this.reader_endpoint
}

output "port" {
  description = "PostgreSQL port."
  value       = aws_rds_cluster.this.port
}

output "master_user_secret_arn" {
  description = "The RDS-managed master secret (bootstrap region only; null elsewhere)."
  value       = try(aws_rds_cluster.this.master_user_secret[0].secret_arn, null)
}
