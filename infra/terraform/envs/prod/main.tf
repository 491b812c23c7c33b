# The prod environment: every key of var.regions gets a network, a member of the Aurora
# global database, the dotshop services and a Prometheus workspace; the edge and Grafana
# exist once (what goes inside Grafana is applied from ./dashboards). The role of a region
# (writer or reader) is decided in one place, local.roles, from var.primary_region.

locals {
  name = "dotshop-${var.environment}"

  tags = {
    Project     = "dotshop"
    Environment = var.environment
    ManagedBy   = "terraform"
  }

  # Tags never carry the role: a failover must not retag anything.
  region_tags = {
    for key, region in var.regions : key => merge(local.tags, {
      Region   = key
      Currency = upper(region.currency)
    })
  }

  # The only expression that reads primary_region (with terraform_data.writer below).
  roles = { for key, region in var.regions : key => key == var.primary_region ? "writer" : "reader" }

  # The home region: where what is created once and never moves lives. Its cluster created the
  # global database (Aurora gives the master credentials to the first member only), its
  # provider manages the global cluster and Grafana, and the other regions' database modules
  # wait for it. Terraform needs these as static references, so this is a constant that
  # tests/infra/test_terraform_structure.py checks against them; it never changes after the
  # first apply. Which region writes is primary_region.
  home_region = "us"

  # Every region's database module, by region key (one line per region).
  databases = {
    us = module.database_us
    eu = module.database_eu
  }

  # What the processes need. Plain settings here; secrets by name only (their values live in
  # Secrets Manager, written by operators, never in Terraform's state).
  processes = {
    api = {
      command        = ["dotshop", "api", "--host", "0.0.0.0", "--port", "8000"]
      port           = 8000
      health_path    = "/readyz"
      host_prefix    = "api"
      cpu            = 1024
      memory         = 2048
      min_count      = 2
      max_count      = 20
      request_target = 500
    }
    relay = {
      command   = ["dotshop", "relay"]
      cpu       = 512
      memory    = 1024
      min_count = 2
      max_count = 6
    }
    console = {
      command     = ["dotshop", "console", "--host", "0.0.0.0", "--port", "8501"]
      port        = 8501
      health_path = "/_stcore/health"
      host_prefix = "console"
      cpu         = 512
      memory      = 1024
      min_count   = 1
      max_count   = 2
    }
  }

  # Processes that run once per environment, in ops_region: two Shopify syncs would spend
  # the same rate limit twice, and two check schedulers would run every check twice.
  singletons = {
    sync = {
      command   = ["dotshop", "sync"]
      cpu       = 512
      memory    = 1024
      min_count = 1
      max_count = 1
    }
    checks = {
      command   = ["dotshop", "checks", "run"]
      cpu       = 512
      memory    = 1024
      min_count = 1
      max_count = 1
    }
  }

  region_processes = {
    for key, region in var.regions : key => merge(
      { for name, p in local.processes : name => merge(p, name == "api" ? { min_count = region.api_min_count, max_count = region.api_max_count } : {}) },
      key == var.ops_region ? local.singletons : {},
    )
  }

  secret_keys = [
    "DATABASE_USER",
    "DATABASE_PASSWORD",
    "STRIPE_API_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "SHOPIFY_ACCESS_TOKEN",
    "SHOPIFY_API_SECRET",
    "DOTSHOP_ADMIN_TOKEN",
    "DOTSHOP_CONSOLE_USERS",
  ]

  environment = {
    SHOPIFY_SHOP      = var.shopify_shop
    DOTSHOP_LOG_LEVEL = "INFO"
  }

  cidrs = [for key, region in var.regions : region.cidr]

  rules_dir = "${path.root}/../../../../dashboards/prometheus"
}

# --- the global database and its writer -------------------------------------------------------

resource "aws_rds_global_cluster" "this" {
  provider = aws.us

  global_cluster_identifier = local.name
  engine                    = "aurora-postgresql"
  engine_version            = var.engine_version
  database_name             = "dotshop"
  storage_encrypted         = true
  deletion_protection       = true

  tags = local.tags

  lifecycle {
    ignore_changes = [database_name]
  }
}

# The writer: which member of the global cluster takes writes. Changing primary_region
# replaces this and runs a switchover (or, with allow_data_loss, a failover) to that region's
# cluster; scripts/switchover.sh does nothing when it already writes. The services read the
# writer's endpoint through it, so they roll only after the switch.
resource "terraform_data" "writer" {
  triggers_replace = {
    region      = var.primary_region
    cluster_arn = local.databases[var.primary_region].cluster_arn
  }

  input = {
    region   = var.primary_region
    endpoint = local.databases[var.primary_region].writer_endpoint
  }

  provisioner "local-exec" {
    command = "${path.module}/../../scripts/switchover.sh"
    environment = {
      GLOBAL_CLUSTER_ID  = aws_rds_global_cluster.this.id
      TARGET_CLUSTER_ARN = local.databases[var.primary_region].cluster_arn
      TARGET_AWS_REGION  = var.regions[var.primary_region].aws_region
      ALLOW_DATA_LOSS    = tostring(var.allow_data_loss)
    }
  }
}

# --- region us -------------------------------------------------------------------------------

module "network_us" {
  source    = "../../modules/network"
  providers = { aws = aws.us }

  name = "${local.name}-us"
  cidr = var.regions["us"].cidr
  tags = local.region_tags["us"]
}

module "database_us" {
  source    = "../../modules/database"
  providers = { aws = aws.us }

  name              = "${local.name}-us"
  global_cluster_id = aws_rds_global_cluster.this.id
  engine_version    = var.engine_version
  bootstrap         = local.home_region == "us"
  instance_count    = var.regions["us"].db_instance_count
  vpc_id            = module.network_us.vpc_id
  subnet_ids        = module.network_us.private_subnet_ids
  client_cidrs      = local.cidrs
  kms_key_arn       = module.network_us.kms_key_arn
  tags              = local.region_tags["us"]
}

module "service_us" {
  source    = "../../modules/service"
  providers = { aws = aws.us }

  name               = "${local.name}-us"
  region_key         = "us"
  primary_region     = terraform_data.writer.output.region
  database_host      = terraform_data.writer.output.endpoint
  database_cidrs     = local.cidrs
  image              = var.image
  processes          = local.region_processes["us"]
  environment        = local.environment
  secret_keys        = local.secret_keys
  vpc_id             = module.network_us.vpc_id
  public_subnet_ids  = module.network_us.public_subnet_ids
  private_subnet_ids = module.network_us.private_subnet_ids
  kms_key_arn        = module.network_us.kms_key_arn
  domain             = var.domain
  zone_id            = data.aws_route53_zone.this.zone_id
  tags               = local.region_tags["us"]
}

module "observability_us" {
  source    = "../../modules/observability"
  providers = { aws = aws.us }

  name        = "${local.name}-us"
  rules_dir   = local.rules_dir
  kms_key_arn = module.network_us.kms_key_arn
  tags        = local.region_tags["us"]
}

# --- region eu -------------------------------------------------------------------------------

module "network_eu" {
  source    = "../../modules/network"
  providers = { aws = aws.eu }

  name = "${local.name}-eu"
  cidr = var.regions["eu"].cidr
  tags = local.region_tags["eu"]
}

module "database_eu" {
  source    = "../../modules/database"
  providers = { aws = aws.eu }

  name              = "${local.name}-eu"
  global_cluster_id = aws_rds_global_cluster.this.id
  engine_version    = var.engine_version
  bootstrap         = local.home_region == "eu"
  instance_count    = var.regions["eu"].db_instance_count
  vpc_id            = module.network_eu.vpc_id
  subnet_ids        = module.network_eu.private_subnet_ids
  client_cidrs      = local.cidrs
  kms_key_arn       = module.network_eu.kms_key_arn
  tags              = local.region_tags["eu"]

  # A secondary can only join a global cluster that has its first member.
  depends_on = [module.database_us]
}

module "service_eu" {
  source    = "../../modules/service"
  providers = { aws = aws.eu }

  name               = "${local.name}-eu"
  region_key         = "eu"
  primary_region     = terraform_data.writer.output.region
  database_host      = terraform_data.writer.output.endpoint
  database_cidrs     = local.cidrs
  image              = var.image
  processes          = local.region_processes["eu"]
  environment        = local.environment
  secret_keys        = local.secret_keys
  vpc_id             = module.network_eu.vpc_id
  public_subnet_ids  = module.network_eu.public_subnet_ids
  private_subnet_ids = module.network_eu.private_subnet_ids
  kms_key_arn        = module.network_eu.kms_key_arn
  domain             = var.domain
  zone_id            = data.aws_route53_zone.this.zone_id
  tags               = local.region_tags["eu"]
}

module "observability_eu" {
  source    = "../../modules/observability"
  providers = { aws = aws.eu }

  name        = "${local.name}-eu"
  rules_dir   = local.rules_dir
  kms_key_arn = module.network_eu.kms_key_arn
  tags        = local.region_tags["eu"]
}

# --- between the regions ---------------------------------------------------------------------

# The secondary region's services write to the primary's cluster: the VPCs are peered, and
# every private route table of one routes the other's block through the peering.
resource "aws_vpc_peering_connection" "us_eu" {
  provider = aws.us

  vpc_id      = module.network_us.vpc_id
  peer_vpc_id = module.network_eu.vpc_id
  peer_region = var.regions["eu"].aws_region

  tags = merge(local.tags, { Name = "${local.name}-us-eu" })
}

resource "aws_vpc_peering_connection_accepter" "us_eu" {
  provider = aws.eu

  vpc_peering_connection_id = aws_vpc_peering_connection.us_eu.id
  auto_accept               = true

  tags = merge(local.tags, { Name = "${local.name}-us-eu" })
}

resource "aws_route" "us_to_eu" {
  provider = aws.us
  count    = length(module.network_us.private_route_table_ids)

  route_table_id            = module.network_us.private_route_table_ids[count.index]
  destination_cidr_block    = var.regions["eu"].cidr
  vpc_peering_connection_id = aws_vpc_peering_connection.us_eu.id
}

resource "aws_route" "eu_to_us" {
  provider = aws.eu
  count    = length(module.network_eu.private_route_table_ids)

  route_table_id            = module.network_eu.private_route_table_ids[count.index]
  destination_cidr_block    = var.regions["us"].cidr
  vpc_peering_connection_id = aws_vpc_peering_connection_accepter.us_eu.id
}

# --- once per environment --------------------------------------------------------------------

data "aws_route53_zone" "this" {
  provider = aws.edge

  name         = var.domain
  private_zone = false
}

module "edge" {
  source    = "../../modules/edge"
  providers = { aws = aws.edge }

  name              = local.name
  domain            = var.domain
  zone_id           = data.aws_route53_zone.this.zone_id
  storefront_origin = var.storefront_origin
  regions = {
    us = {
      aws_region   = var.regions["us"].aws_region
      alb_dns_name = module.service_us.alb_dns_name
      alb_zone_id  = module.service_us.alb_zone_id
    }
    eu = {
      aws_region   = var.regions["eu"].aws_region
      alb_dns_name = module.service_eu.alb_dns_name
      alb_zone_id  = module.service_eu.alb_zone_id
    }
  }
  tags = local.tags
}

module "grafana" {
  source    = "../../modules/observability/grafana"
  providers = { aws = aws.us }

  name = local.name
  prometheus = {
    us = { workspace_arn = module.observability_us.workspace_arn }
    eu = { workspace_arn = module.observability_eu.workspace_arn }
  }
  tags = local.tags
}
