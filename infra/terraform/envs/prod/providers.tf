# One aws provider per key of var.regions. Terraform cannot instantiate providers with
# for_each, so each region key has a block here (its AWS region still comes from the map), and
# main.tf instantiates that region's modules with it. Providers are keyed by region, never by
# role ("primary"/"secondary"): a failover must not move any resource to another provider.

provider "aws" {
  alias               = "us"
  region              = var.regions["us"].aws_region
  allowed_account_ids = [var.account_id]

  default_tags {
    tags = local.region_tags["us"]
  }
}

provider "aws" {
  alias               = "eu"
  region              = var.regions["eu"].aws_region
  allowed_account_ids = [var.account_id]

  default_tags {
    tags = local.region_tags["eu"]
  }
}

# CloudFront, its certificate and firewall, and Route 53 are global services managed through
# one fixed AWS region.
provider "aws" {
  alias               = "edge"
  region              = var.edge_aws_region
  allowed_account_ids = [var.account_id]

  default_tags {
    tags = local.tags
  }
}
