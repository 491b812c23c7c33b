output "vpc_id" {
  description = "The VPC."
  value       = aws_vpc.this.id
}

output "cidr" {
  description = "The VPC's CIDR block."
  value       = aws_vpc.this.cidr_block
}

output "public_subnet_ids" {
  description = "Public subnets, one per zone (load balancer, NAT gateways)."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "Private subnets, one per zone (tasks, database)."
  value       = aws_subnet.private[*].id
}

output "private_route_table_ids" {
  description = "One route table per zone; the environment adds the routes to the other regions."
  value       = aws_route_table.private[*].id
}

output "kms_key_arn" {
  description = "The region's customer-managed KMS key."
  value       = aws_kms_key.this.arn
}
