variable "name" {
  description = "Prefix of every name, e.g. dotshop-prod-us."
  type        = string
}

variable "cidr" {
  description = "The VPC's CIDR block. Regions peer with each other, so their blocks must not overlap."
  type        = string
}

variable "az_count" {
  description = "Availability zones to spread subnets and NAT gateways over."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 6
    error_message = "az_count must be between 2 and 6."
  }
}

variable "interface_endpoints" {
  description = "AWS services reached through interface endpoints, so that image pulls, secrets, logs and metrics never leave the VPC (and cost no NAT traffic)."
  type        = list(string)
  default     = ["ecr.api", "ecr.dkr", "logs", "secretsmanager", "sts", "kms", "aps-workspaces", "monitoring"]
}

variable "flow_log_retention_days" {
  description = "How long VPC flow logs are kept (a year: the window of an incident review or a payment dispute)."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
}
