# The edge: per region key a CloudFront distribution (<region>.<domain>) in front of the
# storefront and that region's API, whose catalog reads fail over to the next region through
# an origin group; Route 53 latency-based records (api.<domain>) with health checks for the
# webhooks and other clients that do not care which region answers. This module runs with the
# provider of CloudFront's home region (certificates for CloudFront must live there).

data "aws_region" "current" {}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  keys = sort(keys(var.regions))
  # Where a region's reads go when its API fails: the next region in name order, so every
  # region has exactly one fallback and adding a region needs no edit here.
  fallback = { for i, k in local.keys : k => local.keys[(i + 1) % length(local.keys)] }
}

# --- DNS: the regions' API names, health checks, latency records -----------------------------

resource "aws_route53_record" "api_regional" {
  #checkov:skip=CKV2_AWS_23:An alias of the region's load balancer, which the service module creates and passes in (checkov cannot follow a module input).
  for_each = var.regions

  zone_id = var.zone_id
  name    = "api-${each.key}.${var.domain}"
  type    = "A"

  alias {
    name                   = each.value.alb_dns_name
    zone_id                = each.value.alb_zone_id
    evaluate_target_health = true
  }
}

resource "aws_route53_record" "console_regional" {
  #checkov:skip=CKV2_AWS_23:An alias of the region's load balancer, which the service module creates and passes in (checkov cannot follow a module input).
  for_each = var.regions

  zone_id = var.zone_id
  name    = "console-${each.key}.${var.domain}"
  type    = "A"

  alias {
    name                   = each.value.alb_dns_name
    zone_id                = each.value.alb_zone_id
    evaluate_target_health = false
  }
}

resource "aws_route53_health_check" "api" {
  for_each = var.regions

  fqdn              = "api-${each.key}.${var.domain}"
  port              = 443
  type              = "HTTPS"
  resource_path     = var.health_check_path
  request_interval  = 10
  failure_threshold = 3
  measure_latency   = true

  tags = merge(var.tags, { Name = "${var.name}-api-${each.key}" })
}

resource "aws_route53_record" "api_latency" {
  #checkov:skip=CKV2_AWS_23:An alias of the region's load balancer, which the service module creates and passes in (checkov cannot follow a module input).
  for_each = var.regions

  zone_id         = var.zone_id
  name            = "api.${var.domain}"
  type            = "A"
  set_identifier  = each.key
  health_check_id = aws_route53_health_check.api[each.key].id

  latency_routing_policy {
    region = each.value.aws_region
  }

  alias {
    name                   = each.value.alb_dns_name
    zone_id                = each.value.alb_zone_id
    evaluate_target_health = true
  }
}

# --- certificate and firewall ----------------------------------------------------------------

resource "aws_acm_certificate" "edge" {
  domain_name               = var.domain
  subject_alternative_names = [for k in local.keys : "${k}.${var.domain}"]
  validation_method         = "DNS"

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_route53_record" "edge_validation" {
  for_each = {
    for o in aws_acm_certificate.edge.domain_validation_options : o.domain_name => o
  }

  zone_id         = var.zone_id
  name            = each.value.resource_record_name
  type            = each.value.resource_record_type
  records         = [each.value.resource_record_value]
  ttl             = 300
  allow_overwrite = true
}

resource "aws_acm_certificate_validation" "edge" {
  certificate_arn         = aws_acm_certificate.edge.arn
  validation_record_fqdns = [for r in aws_route53_record.edge_validation : r.fqdn]
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:A key policy's resource is always the key itself ("*" means this key).
  #checkov:skip=CKV_AWS_111:A key policy's resource is always the key itself ("*" means this key).
  #checkov:skip=CKV_AWS_356:A key policy's resource is always the key itself ("*" means this key).
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogsEncrypt"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${data.aws_region.current.name}.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "edge" {
  description             = "${var.name}: edge firewall logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json

  tags = var.tags
}

resource "aws_cloudwatch_log_group" "waf" {
  # WAF only logs to groups whose name starts with aws-waf-logs-.
  name              = "aws-waf-logs-${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.edge.arn

  tags = var.tags
}

resource "aws_wafv2_web_acl" "edge" {
  name  = "${var.name}-edge"
  scope = "CLOUDFRONT"

  default_action {
    allow {}
  }

  rule {
    name     = "common"
    priority = 10
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesCommonRuleSet"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-common"
      sampled_requests_enabled   = true
    }
  }

  # Includes the Log4j (CVE-2021-44228) signatures.
  rule {
    name     = "known-bad-inputs"
    priority = 20
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesKnownBadInputsRuleSet"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-known-bad-inputs"
      sampled_requests_enabled   = true
    }
  }

  # Anonymous addresses (VPNs, Tor, hosting providers) are counted, not blocked: shoppers on a
  # VPN still buy, and the count shows where card testing comes from.
  rule {
    name     = "anonymous-ip"
    priority = 25
    override_action {
      count {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesAnonymousIpList"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-anonymous-ip"
      sampled_requests_enabled   = true
    }
  }

  # Card testing and checkout floods come from few addresses.
  rule {
    name     = "rate-limit"
    priority = 30
    action {
      block {}
    }
    statement {
      rate_based_statement {
        limit              = var.rate_limit_per_5_min
        aggregate_key_type = "IP"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-rate-limit"
      sampled_requests_enabled   = true
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = "${var.name}-edge"
    sampled_requests_enabled   = true
  }

  tags = var.tags
}

resource "aws_wafv2_web_acl_logging_configuration" "edge" {
  resource_arn            = aws_wafv2_web_acl.edge.arn
  log_destination_configs = [aws_cloudwatch_log_group.waf.arn]
}

# --- distributions ---------------------------------------------------------------------------

data "aws_cloudfront_cache_policy" "disabled" {
  name = "Managed-CachingDisabled"
}

data "aws_cloudfront_cache_policy" "optimized" {
  name = "Managed-CachingOptimized"
}

# Every viewer header but Host reaches the API: Idempotency-Key, Stripe-Signature, the
# Shopify HMAC, Authorization.
data "aws_cloudfront_origin_request_policy" "all_viewer" {
  name = "Managed-AllViewerExceptHostHeader"
}

data "aws_cloudfront_response_headers_policy" "security" {
  name = "Managed-SecurityHeadersPolicy"
}

resource "aws_cloudfront_distribution" "this" {
  #checkov:skip=CKV_AWS_86:Standard logs need an S3 bucket with ACLs enabled; requests are logged by the API and the firewall (aws-waf-logs-*). A log bucket is left to do (infra/terraform/README.md).
  #checkov:skip=CKV_AWS_305:The default path goes to the storefront's origin, which serves its own index; there is no root object to name.
  #checkov:skip=CKV_AWS_374:A storefront sells wherever it ships; where is decided by the storefront's shipping rules, not by blocking viewers.
  for_each = var.regions

  enabled         = true
  is_ipv6_enabled = true
  comment         = "${var.name} ${each.key}: storefront and API"
  aliases         = ["${each.key}.${var.domain}"]
  price_class     = "PriceClass_All"
  web_acl_id      = aws_wafv2_web_acl.edge.arn
  http_version    = "http2and3"

  origin {
    origin_id   = "storefront"
    domain_name = var.storefront_origin
    custom_origin_config {
      http_port              = 80
      https_port             = 443
      origin_protocol_policy = "https-only"
      origin_ssl_protocols   = ["TLSv1.2"]
    }
  }

  # Every region's API is an origin of every distribution: the failover target must be one.
  dynamic "origin" {
    for_each = var.regions
    content {
      origin_id   = "api-${origin.key}"
      domain_name = "api-${origin.key}.${var.domain}"
      custom_origin_config {
        http_port              = 80
        https_port             = 443
        origin_protocol_policy = "https-only"
        origin_ssl_protocols   = ["TLSv1.2"]
      }
    }
  }

  # The region's origin group: its own API first, the next region's when it answers 5xx or
  # not at all. CloudFront fails over GET, HEAD and OPTIONS only, so it serves the catalog.
  origin_group {
    origin_id = "api-${each.key}-failover"
    failover_criteria {
      status_codes = [500, 502, 503, 504]
    }
    member {
      origin_id = "api-${each.key}"
    }
    member {
      origin_id = "api-${local.fallback[each.key]}"
    }
  }

  default_cache_behavior {
    target_origin_id           = "storefront"
    viewer_protocol_policy     = "redirect-to-https"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    compress                   = true
    cache_policy_id            = data.aws_cloudfront_cache_policy.optimized.id
    response_headers_policy_id = data.aws_cloudfront_response_headers_policy.security.id
  }

  # Catalog reads: the origin group (stock changes by the second, so nothing is cached).
  ordered_cache_behavior {
    path_pattern               = "/v1/products*"
    target_origin_id           = "api-${each.key}-failover"
    viewer_protocol_policy     = "https-only"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    compress                   = true
    cache_policy_id            = data.aws_cloudfront_cache_policy.disabled.id
    origin_request_policy_id   = data.aws_cloudfront_origin_request_policy.all_viewer.id
    response_headers_policy_id = data.aws_cloudfront_response_headers_policy.security.id
  }

  # Checkouts, orders, webhooks: every method, to the region's own API (its currency and
  # payment rules); its writes reach the primary database wherever that is.
  ordered_cache_behavior {
    path_pattern               = "/v1/*"
    target_origin_id           = "api-${each.key}"
    viewer_protocol_policy     = "https-only"
    allowed_methods            = ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"]
    cached_methods             = ["GET", "HEAD"]
    compress                   = true
    cache_policy_id            = data.aws_cloudfront_cache_policy.disabled.id
    origin_request_policy_id   = data.aws_cloudfront_origin_request_policy.all_viewer.id
    response_headers_policy_id = data.aws_cloudfront_response_headers_policy.security.id
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    acm_certificate_arn      = aws_acm_certificate_validation.edge.certificate_arn
    ssl_support_method       = "sni-only"
    minimum_protocol_version = "TLSv1.2_2021"
  }

  tags = var.tags
}

resource "aws_route53_record" "storefront" {
  for_each = var.regions

  zone_id = var.zone_id
  name    = "${each.key}.${var.domain}"
  type    = "A"

  alias {
    name                   = aws_cloudfront_distribution.this[each.key].domain_name
    zone_id                = aws_cloudfront_distribution.this[each.key].hosted_zone_id
    evaluate_target_health = false
  }
}
