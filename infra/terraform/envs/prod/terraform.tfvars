# prod: the values of this environment. Region names (the keys) are dotshop's own
# (DOTSHOP_REGION); AWS regions, network blocks and sizes are written here and nowhere else.
environment = "prod"

regions = {
  us = {
    aws_region        = "us-east-1"
    cidr              = "10.10.0.0/16"
    currency          = "usd"
    db_instance_count = 2
    api_min_count     = 3
    api_max_count     = 30
  }
  eu = {
    aws_region        = "eu-west-1"
    cidr              = "10.20.0.0/16"
    currency          = "eur"
    db_instance_count = 2
    api_min_count     = 2
    api_max_count     = 20
  }
}

# Failover: change this line (and nothing else) and let the pipeline apply it.
primary_region = "us"

ops_region = "us"

# CloudFront's certificates and firewall are managed through us-east-1, whatever our regions.
edge_aws_region = "us-east-1"

domain            = "shop.dotshop.example"
storefront_origin = "storefront.dotshop.example"
shopify_shop      = "dotshop.myshopify.com"
