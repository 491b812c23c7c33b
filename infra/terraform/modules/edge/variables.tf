variable "name" {
  description = "Prefix of every name, e.g. dotshop-prod."
  type        = string
}

variable "domain" {
  description = "The storefront's DNS zone, e.g. shop.example.com."
  type        = string
}

variable "zone_id" {
  description = "Route 53 hosted zone of var.domain."
  type        = string
}

variable "storefront_origin" {
  description = "Host name of the storefront's own origin (the pages); the API paths go to our regions."
  type        = string
}

variable "regions" {
  description = "Per region key (us, eu): its AWS region (latency records) and its load balancer."
  type = map(object({
    aws_region   = string
    alb_dns_name = string
    alb_zone_id  = string
  }))
}

variable "health_check_path" {
  description = "What Route 53 asks each region's API: /readyz answers 503 while its database is unreachable."
  type        = string
  default     = "/readyz"
}

variable "rate_limit_per_5_min" {
  description = "Requests per client IP per five minutes before the firewall blocks it (a storefront shopper makes a few dozen)."
  type        = number
  default     = 2000
}

variable "log_retention_days" {
  description = "Firewall logs: a year, the window of a payment dispute."
  type        = number
  default     = 365
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
}
