"""The Terraform of infra/terraform (issue 13), proven without a cloud or a provider download:
the files are parsed with python-hcl2 and the expressions that decide a region's role are
evaluated here, so these tests pin

- the module layout (main/variables/outputs/versions.tf and a README each, described inputs);
- every region of the `regions` map instantiated with its own provider and only its own
  entries of the map, and the map's keys being dotshop's regions (core/settings.py REGIONS);
- every resource that can carry tags carrying them, and every aws provider adding them too;
- no AWS region or account id written in a .tf file (they live in terraform.tfvars and the
  pipeline's variables);
- failover = `primary_region`: flipping it changes exactly the global cluster's writer and the
  services' DOTSHOP_PRIMARY_REGION and database host, and nothing else (a mutated copy proves
  the comparison can fail).

The evaluator knows the expression forms the environment root uses (references, literals,
templates, conditionals, comparisons, for expressions, a few functions). Anything else raises,
so a new construct in a role-deciding place fails loudly instead of being skipped."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import pytest
from lark import Token, Tree

from core.settings import REGIONS

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "infra" / "terraform"
MODULES = TERRAFORM / "modules"
ENV = TERRAFORM / "envs" / "prod"
MODULE_DIRS = sorted({p.parent for p in MODULES.rglob("*.tf")})
TF_FILES = sorted(p for p in TERRAFORM.rglob("*.tf") if ".terraform" not in p.parts)
MODULE_FILES = ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md")

# Resource types whose schema has no `tags` argument, read off the aws provider's schema
# (`terraform providers schema -json`, hashicorp/aws 5.100) for every type these files use;
# terraform_data and grafana_* have no tags at all.
UNTAGGABLE = {
    "aws_acm_certificate_validation",
    "aws_appautoscaling_policy",
    "aws_grafana_workspace_service_account",
    "aws_grafana_workspace_service_account_token",
    "aws_iam_role_policy",
    "aws_iam_role_policy_attachment",
    "aws_kms_alias",
    "aws_prometheus_alert_manager_definition",
    "aws_route",
    "aws_route53_record",
    "aws_route_table_association",
    "aws_sns_topic_policy",
    "aws_wafv2_web_acl_logging_configuration",
    "terraform_data",
    "grafana_dashboard",
    "grafana_data_source",
    "grafana_folder",
}
REQUIRED_TAGS = {"Project", "Environment", "ManagedBy"}
# An AWS region name (us-east-1, eu-central-2, ap-southeast-1, us-gov-west-1...) and an account id.
AWS_REGION = re.compile(
    r"\b(?:us|eu|ap|sa|ca|me|af|il|mx|cn)(?:-gov|-iso[a-z]?)?-"
    r"(?:north|south|east|west|central)(?:east|west)?-\d\b"
)
ACCOUNT_ID = re.compile(r"(?<![\d.:/-])\d{12}(?![\d.])")


# --- parsing --------------------------------------------------------------------------------


@dataclass
class Block:
    """One HCL block: its type, labels, attributes (unevaluated expression trees) and blocks."""

    type: str
    labels: tuple[str, ...]
    attributes: dict[str, Tree] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)
    path: Path | None = None

    def children(self, type_: str) -> list[Block]:
        return [b for b in self.blocks if b.type == type_]

    @property
    def address(self) -> str:
        return ".".join((self.type, *self.labels))


def _identifier(node: Tree) -> str:
    return str(node.children[0])


def _string_literal(node: Tree) -> str:
    return "".join(str(p.children[0]) for p in node.children if isinstance(p, Tree))


def _body(body: Tree, path: Path | None) -> Block:
    out = Block("body", ())
    for child in body.children:
        if not isinstance(child, Tree):
            continue
        if child.data == "attribute":
            out.attributes[_identifier(child.children[0])] = child.children[2]
        elif child.data == "block":
            type_ = _identifier(child.children[0])
            labels = tuple(
                _string_literal(c) if c.data == "string" else _identifier(c)
                for c in child.children[1:]
                if isinstance(c, Tree) and c.data in ("string", "identifier")
            )
            inner = next(c for c in child.children if isinstance(c, Tree) and c.data == "body")
            block = _body(inner, path)
            block.type, block.labels, block.path = type_, labels, path
            out.blocks.append(block)
    return out


def parse_file(path: Path) -> list[Block]:
    tree = hcl2.parses_to_tree(path.read_text())
    body = next(c for c in tree.children if isinstance(c, Tree) and c.data == "body")
    return _body(body, path).blocks


def parse_dir(folder: Path) -> list[Block]:
    return [b for p in sorted(folder.glob("*.tf")) for b in parse_file(p)]


def parse_tfvars(path: Path) -> dict[str, Any]:
    body = parse_file_body(path)
    ev = Evaluator({})
    return {name: ev.eval(expr) for name, expr in body.attributes.items()}


def parse_file_body(path: Path) -> Block:
    tree = hcl2.parses_to_tree(path.read_text())
    return _body(next(c for c in tree.children if isinstance(c, Tree) and c.data == "body"), path)


# --- evaluation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A value only known after apply (a module output, a resource attribute, a path)."""

    text: str


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "merge": lambda *maps: {k: v for m in maps for k, v in m.items()},
    "upper": lambda s: s.upper(),
    "lower": lambda s: s.lower(),
    "tostring": lambda v: v if isinstance(v, str | Ref) else str(v).lower(),
    "keys": lambda m: sorted(m),
    "values": lambda m: [m[k] for k in sorted(m)],
    "sort": sorted,
    "length": len,
    "contains": lambda xs, x: x in xs,
    "concat": lambda *xs: [v for x in xs for v in x],
}


class Evaluator:
    """Evaluates HCL expression trees with `var`, `local` and a few resource outputs known."""

    def __init__(
        self,
        scope: dict[str, Any],
        resolve: Callable[[tuple[str, ...]], Any] | None = None,
    ) -> None:
        self.scope = scope
        self.resolve = resolve

    def eval(self, node: Tree | Token, env: dict[str, Any] | None = None) -> Any:
        env = env or {}
        if isinstance(node, Token):
            raise ValueError(f"unexpected token {node!r}")
        handler = getattr(self, f"_{node.data}", None)
        if handler is None:
            raise NotImplementedError(f"expression {node.data} at line {node.meta.line}")
        return handler(node, env)

    def _subtrees(self, node: Tree) -> list[Tree]:
        return [c for c in node.children if isinstance(c, Tree) and c.data != "new_line_or_comment"]

    def _expr_term(self, node: Tree, env: dict[str, Any]) -> Any:
        (inner,) = self._subtrees(node)
        return self.eval(inner, env)

    def _int_lit(self, node: Tree, env: dict[str, Any]) -> int:
        return int(str(node.children[0]))

    def _float_lit(self, node: Tree, env: dict[str, Any]) -> float:
        return float(str(node.children[0]))

    def _literal_value(self, node: Tree, env: dict[str, Any]) -> Any:
        return {"true": True, "false": False, "null": None}[str(node.children[0])]

    def _string(self, node: Tree, env: dict[str, Any]) -> Any:
        parts: list[Any] = []
        for part in self._subtrees(node):
            for piece in part.children:
                if isinstance(piece, Tree) and piece.data == "interpolation":
                    parts.append(self.eval(self._subtrees(piece)[0], env))
                else:
                    parts.append(str(piece))
        if len(parts) == 1 and not isinstance(parts[0], str):
            return parts[0]
        if any(isinstance(p, Ref) for p in parts):
            return Ref("".join(p.text if isinstance(p, Ref) else str(p) for p in parts))
        return "".join(str(p) for p in parts)

    def _tuple(self, node: Tree, env: dict[str, Any]) -> list[Any]:
        return [self.eval(c, env) for c in self._subtrees(node)]

    def _object(self, node: Tree, env: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for elem in self._subtrees(node):
            key_node, value_node = self._subtrees(elem)
            key_expr = self._subtrees(key_node)[0]
            key_inner = self._subtrees(key_expr)[0] if key_expr.data == "expr_term" else key_expr
            key = (
                _identifier(key_inner)
                if key_inner.data == "identifier"
                else self.eval(key_expr, env)
            )
            out[key] = self.eval(value_node, env)
        return out

    def _identifier(self, node: Tree, env: dict[str, Any]) -> Any:
        name = _identifier(node)
        if name in env:
            return env[name]
        if name in self.scope:
            return self.scope[name]
        return Ref(name)

    def _get_attr_expr_term(self, node: Tree, env: dict[str, Any]) -> Any:
        target, attr = self._subtrees(node)
        path = self._path(target)
        name = _identifier(self._subtrees(attr)[0])
        if path is not None and path[0] in env:
            path = None
        if path is not None and self.resolve is not None:
            resolved = self.resolve((*path, name))
            if resolved is not None:
                return resolved
        value = self.eval(target, env)
        if isinstance(value, Ref):
            return Ref(f"{value.text}.{name}")
        if not isinstance(value, dict) or name not in value:
            raise KeyError(f"{name} not in {value!r} (line {node.meta.line})")
        return value[name]

    def _path(self, node: Tree) -> tuple[str, ...] | None:
        """`a.b.c` as a tuple of names, for references the caller resolves itself."""
        inner = self._subtrees(node)[0] if node.data == "expr_term" else node
        if inner.data == "identifier":
            return (_identifier(inner),)
        if inner.data == "get_attr_expr_term":
            target, attr = self._subtrees(inner)
            head = self._path(target)
            return None if head is None else (*head, _identifier(self._subtrees(attr)[0]))
        return None

    def _index_expr_term(self, node: Tree, env: dict[str, Any]) -> Any:
        target, index = self._subtrees(node)
        value = self.eval(target, env)
        key = self.eval(self._subtrees(index)[0], env)
        if isinstance(value, Ref) or isinstance(key, Ref):
            return Ref(f"{getattr(value, 'text', value)}[{getattr(key, 'text', key)}]")
        return value[key]

    def _function_call(self, node: Tree, env: dict[str, Any]) -> Any:
        name = _identifier(node.children[0])
        args_node = next((c for c in self._subtrees(node)[1:] if c.data == "arguments"), None)
        args = [self.eval(a, env) for a in self._subtrees(args_node)] if args_node else []
        if any(isinstance(a, Ref) for a in args) and name in ("length", "keys", "sort"):
            return Ref(f"{name}(...)")
        if name not in FUNCTIONS:
            raise NotImplementedError(f"function {name} at line {node.meta.line}")
        return FUNCTIONS[name](*args)

    def _conditional(self, node: Tree, env: dict[str, Any]) -> Any:
        cond, yes, no = self._subtrees(node)
        test = self.eval(cond, env)
        if isinstance(test, Ref):
            raise ValueError(f"condition only known after apply at line {node.meta.line}")
        return self.eval(yes if test else no, env)

    def _unary_op(self, node: Tree, env: dict[str, Any]) -> Any:
        op = str(node.children[0])
        value = self.eval(self._subtrees(node)[0], env)
        return (not value) if op == "!" else -value

    def _binary_op(self, node: Tree, env: dict[str, Any]) -> Any:
        left, term = self._subtrees(node)
        op_node, right = self._subtrees(term)
        op = str(op_node.children[0])
        a, b = self.eval(left, env), self.eval(right, env)
        ops: dict[str, Callable[[Any, Any], Any]] = {
            "==": lambda x, y: x == y,
            "!=": lambda x, y: x != y,
            "&&": lambda x, y: x and y,
            "||": lambda x, y: x or y,
            "+": lambda x, y: x + y,
            "-": lambda x, y: x - y,
            "*": lambda x, y: x * y,
            "<": lambda x, y: x < y,
            ">": lambda x, y: x > y,
            "<=": lambda x, y: x <= y,
            ">=": lambda x, y: x >= y,
        }
        return ops[op](a, b)

    def _for(self, node: Tree, env: dict[str, Any]) -> Iterator[tuple[dict[str, Any], list[Tree]]]:
        intro, *rest = self._subtrees(node)
        names = [_identifier(c) for c in self._subtrees(intro) if c.data == "identifier"]
        collection = self.eval(next(c for c in self._subtrees(intro) if c.data == "expr_term"), env)
        items = (
            sorted(collection.items())
            if isinstance(collection, dict)
            else list(enumerate(collection))
        )
        cond = next((c for c in rest if c.data == "for_cond"), None)
        for k, v in items:
            inner = {
                **env,
                **(dict(zip(names, (k, v), strict=True)) if len(names) == 2 else {names[0]: v}),
            }
            if cond is None or self.eval(self._subtrees(cond)[0], inner):
                yield inner, [c for c in rest if c.data != "for_cond"]

    def _for_object_expr(self, node: Tree, env: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for inner, (key, value) in self._for(node, env):
            out[self.eval(key, inner)] = self.eval(value, inner)
        return out

    def _for_tuple_expr(self, node: Tree, env: dict[str, Any]) -> list[Any]:
        return [self.eval(value, inner) for inner, (value,) in self._for(node, env)]


def variable_defaults(blocks: list[Block]) -> dict[str, Any]:
    ev = Evaluator({})
    return {
        b.labels[0]: ev.eval(b.attributes["default"])
        for b in blocks
        if b.type == "variable" and "default" in b.attributes
    }


@dataclass
class Root:
    """The environment root evaluated for one set of variables."""

    blocks: list[Block]
    variables: dict[str, Any]

    def __post_init__(self) -> None:
        self.locals_src = {
            name: expr
            for b in self.blocks
            if b.type == "locals"
            for name, expr in b.attributes.items()
        }
        self.locals: dict[str, Any] = {}
        self.by_address = {b.address: b for b in self.blocks}
        self.evaluator = Evaluator(
            {"var": self.variables, "local": _Lazy(self._local)}, resolve=self._resolve
        )

    def _local(self, name: str) -> Any:
        if name not in self.locals:
            self.locals[name] = self.evaluator.eval(self.locals_src[name])
        return self.locals[name]

    def _resolve(self, path: tuple[str, ...]) -> Any:
        # terraform_data.<name>.output.<key> is its `input` as given: follow it, so that what the
        # services receive through the writer is compared, not an opaque reference.
        if len(path) == 4 and path[0] == "terraform_data" and path[2] == "output":
            block = self.by_address[f"resource.terraform_data.{path[1]}"]
            return self.evaluator.eval(block.attributes["input"])[path[3]]
        return None

    def evaluate(self, block: Block) -> dict[str, Any]:
        """Every argument of a block (and of its nested blocks), evaluated."""
        out: dict[str, Any] = {
            name: self.evaluator.eval(expr)
            for name, expr in block.attributes.items()
            if name not in ("source", "providers", "depends_on", "provider", "count", "for_each")
        }
        for nested in block.blocks:
            if nested.type != "lifecycle":
                out.setdefault(nested.type, []).append(self.evaluate(nested))
        return out


class _Lazy(dict):
    """`local` as a mapping that evaluates each local on first use."""

    def __init__(self, get: Callable[[str], Any]) -> None:
        super().__init__()
        self._get = get

    def __contains__(self, name: object) -> bool:
        return True

    def __getitem__(self, name: str) -> Any:
        return self._get(name)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {
            k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}.{key}").items()
        }
    if isinstance(value, list):
        return {
            k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}[{i}]").items()
        }
    return {prefix: value}


def env_root(folder: Path, **overrides: Any) -> Root:
    blocks = parse_dir(folder)
    variables = {
        **variable_defaults(blocks),
        **parse_tfvars(folder / "terraform.tfvars"),
        # Given by the pipeline (TF_VAR_*), never written in the repository.
        "account_id": "000000000000",
        "image": "registry.invalid/dotshop@sha256:0",
        **overrides,
    }
    return Root(blocks, variables)


def world(root: Root) -> dict[str, Any]:
    """What each module and root resource receives, flattened to address.argument -> value."""
    out: dict[str, Any] = {}
    for block in root.blocks:
        if block.type in ("module", "resource"):
            for key, value in flatten(root.evaluate(block)).items():
                out[f"{block.address}{key}"] = value
    return out


def service_environment(root: Root, module: str) -> dict[str, Any]:
    """The plain environment the service module gives its containers, for one region."""
    service_blocks = parse_dir(MODULES / "service")
    inputs = {
        **variable_defaults(service_blocks),
        **root.evaluate(root.by_address[f"module.{module}"]),
    }
    locals_src = {
        n: e for b in service_blocks if b.type == "locals" for n, e in b.attributes.items()
    }
    ev = Evaluator({"var": inputs})
    return ev.eval(locals_src["environment"])


def flip_diff(folder: Path, a: str, b: str) -> set[str]:
    left, right = (
        world(env_root(folder, primary_region=a)),
        world(env_root(folder, primary_region=b)),
    )
    return {k for k in left.keys() | right.keys() if left.get(k) != right.get(k)}


# --- the tests ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root() -> Root:
    return env_root(ENV)


@pytest.fixture(scope="module")
def region_keys(root: Root) -> list[str]:
    return sorted(root.variables["regions"])


def test_every_module_has_the_usual_layout_and_describes_its_interface() -> None:
    assert {d.relative_to(MODULES).as_posix() for d in MODULE_DIRS} >= {
        "network",
        "database",
        "service",
        "edge",
        "observability",
        "observability/grafana",
        "observability/dashboards",
    }
    for folder in [*MODULE_DIRS, ENV, ENV / "dashboards"]:
        expected = (
            MODULE_FILES
            if folder in MODULE_DIRS
            else ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "backend.hcl")
        )
        missing = [f for f in expected if not (folder / f).is_file()]
        assert not missing, f"{folder.relative_to(ROOT)} lacks {missing}"
        for block in parse_dir(folder):
            if block.type in ("variable", "output"):
                assert "description" in block.attributes, f"{block.address} in {block.path}"
            if block.type == "variable":
                assert "type" in block.attributes, f"{block.address} in {block.path}"


def test_the_regions_are_dotshops_regions_with_their_currency(root: Root) -> None:
    regions = root.variables["regions"]
    assert len(regions) >= 2
    for key, region in regions.items():
        assert key in REGIONS, f"{key} is not a region of core/settings.py"
        assert region["currency"] == REGIONS[key]["currency"]
    cidrs = [r["cidr"] for r in regions.values()]
    assert len(set(cidrs)) == len(cidrs), "peered VPCs need distinct blocks"
    assert root.variables["primary_region"] in regions
    assert root.variables["ops_region"] in regions


def test_every_region_of_the_map_is_instantiated_with_its_own_provider(
    root: Root, region_keys: list[str]
) -> None:
    providers = {
        root.evaluator.eval(b.attributes["alias"]): b
        for b in root.blocks
        if b.type == "provider" and b.labels == ("aws",)
    }
    modules = {b.labels[0]: b for b in root.blocks if b.type == "module"}
    for key in region_keys:
        provider = providers[key]
        # The provider's AWS region comes from the map entry of its own key.
        assert (
            root.evaluator.eval(provider.attributes["region"])
            == root.variables["regions"][key]["aws_region"]
        )
        for kind in ("network", "database", "service", "observability"):
            module = modules.get(f"{kind}_{key}")
            assert module is not None, f"module {kind}_{key} missing for region {key}"
            assert _text(module.attributes["providers"]) == f"{{aws=aws.{key}}}"
            # A region's module reads only its own entry of the map.
            text = "".join(_text(e) for e in module.attributes.values())
            assert set(re.findall(r'var\.regions\["(\w+)"\]', text)) <= {key}
            assert root.evaluate(module)["tags"]["Region"] == key
    # No module of a region that is not in the map.
    per_region = {
        n.rsplit("_", 1)[1]
        for n in modules
        if re.fullmatch(r"(network|database|service|observability)_\w+", n)
    }
    assert per_region == set(region_keys)
    # The once-per-environment modules and the writer's lookup see every region, each entry
    # wired to that region's own module (a swapped line would point a region at another's).
    edge = root.evaluate(root.by_address["module.edge"])["regions"]
    grafana = root.evaluate(root.by_address["module.grafana"])["prometheus"]
    prometheus = root.evaluate(root.by_address["output.prometheus"])["value"]
    assert sorted(edge) == sorted(grafana) == sorted(prometheus) == region_keys
    assert root._local("databases") == {k: Ref(f"module.database_{k}") for k in region_keys}
    for key in region_keys:
        aws_region = root.variables["regions"][key]["aws_region"]
        assert edge[key] == {
            "aws_region": aws_region,
            "alb_dns_name": Ref(f"module.service_{key}.alb_dns_name"),
            "alb_zone_id": Ref(f"module.service_{key}.alb_zone_id"),
        }
        assert grafana[key] == {"workspace_arn": Ref(f"module.observability_{key}.workspace_arn")}
        # What the dashboards root gets for the region's Grafana data source.
        assert prometheus[key] == {
            "aws_region": aws_region,
            "endpoint": Ref(f"module.observability_{key}.prometheus_endpoint"),
        }


def test_the_home_region_is_the_static_anchor_of_the_global_database(
    root: Root, region_keys: list[str]
) -> None:
    home = root._local("home_region")
    assert home in region_keys
    cluster = root.by_address["resource.aws_rds_global_cluster.this"]
    assert _text(cluster.attributes["provider"]) == f"aws.{home}"
    assert _text(root.by_address["module.grafana"].attributes["providers"]) == f"{{aws=aws.{home}}}"
    for key in region_keys:
        module = root.by_address[f"module.database_{key}"]
        assert root.evaluate(module)["bootstrap"] is (key == home)
        depends = (
            _text(module.attributes["depends_on"]) if "depends_on" in module.attributes else "[]"
        )
        assert depends == ("[]" if key == home else f"[module.database_{home}]")


def test_every_resource_is_tagged() -> None:
    untagged = []
    for path in TF_FILES:
        for block in parse_file(path):
            if (
                block.type == "resource"
                and block.labels[0] not in UNTAGGABLE
                and "tags" not in block.attributes
            ):
                untagged.append(f"{path.relative_to(TERRAFORM)}: {block.address}")
    assert not untagged
    # And every aws provider adds the environment's tags to whatever its resources carry.
    root = env_root(ENV)
    for block in root.blocks:
        if block.type == "provider" and block.labels == ("aws",):
            (default_tags,) = block.children("default_tags")
            assert set(root.evaluator.eval(default_tags.attributes["tags"])) >= REQUIRED_TAGS


def test_no_region_or_account_is_written_in_the_code() -> None:
    found = []
    for path in TF_FILES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if AWS_REGION.search(code) or ACCOUNT_ID.search(code):
                found.append(f"{path.relative_to(TERRAFORM)}:{number}: {line.strip()}")
    assert not found


def test_flipping_primary_region_moves_exactly_the_writer_and_the_services_primary(
    region_keys: list[str],
) -> None:
    a, b = region_keys[0], region_keys[1]
    for primary in (a, b):
        root = env_root(ENV, primary_region=primary)
        writer = root.evaluate(root.by_address["resource.terraform_data.writer"])
        target = writer["provisioner"][0]["environment"]
        assert target["TARGET_CLUSTER_ARN"] == Ref(f"module.database_{primary}.cluster_arn")
        assert target["TARGET_AWS_REGION"] == root.variables["regions"][primary]["aws_region"]
        for key in region_keys:
            env = service_environment(root, f"service_{key}")
            assert env["DOTSHOP_REGION"] == key
            assert env["DOTSHOP_PRIMARY_REGION"] == primary
            assert env["DATABASE_HOST"] == Ref(f"module.database_{primary}.writer_endpoint")

    assert flip_diff(ENV, a, b) == expected_flip(region_keys)
    # Inside the containers, the same two settings and nothing else.
    left, right = env_root(ENV, primary_region=a), env_root(ENV, primary_region=b)
    for key in region_keys:
        l_env, r_env = (
            service_environment(left, f"service_{key}"),
            service_environment(right, f"service_{key}"),
        )
        assert {k for k in l_env if l_env[k] != r_env[k]} == {
            "DOTSHOP_PRIMARY_REGION",
            "DATABASE_HOST",
        }


def expected_flip(region_keys: list[str]) -> set[str]:
    writer = "resource.terraform_data.writer"
    return {
        f"{writer}.triggers_replace.region",
        f"{writer}.triggers_replace.cluster_arn",
        f"{writer}.input.region",
        f"{writer}.input.endpoint",
        f"{writer}.provisioner[0].environment.TARGET_CLUSTER_ARN",
        f"{writer}.provisioner[0].environment.TARGET_AWS_REGION",
    } | {
        f"module.service_{k}.{arg}"
        for k in region_keys
        for arg in ("primary_region", "database_host")
    }


@pytest.mark.parametrize(
    ("mutation", "why"),
    [
        (
            ("local.databases[var.primary_region]", 'local.databases["us"]'),
            "the writer's target hard-coded",
        ),
        (
            (
                "Currency = upper(region.currency)",
                "Currency = upper(region.currency)\n      Role = local.roles[key]",
            ),
            "the role leaking into every region's tags",
        ),
        (
            (
                "primary_region     = terraform_data.writer.output.region",
                'primary_region     = "us"',
            ),
            "a service's DOTSHOP_PRIMARY_REGION hard-coded",
        ),
    ],
    ids=["hard-coded-writer", "role-in-tags", "hard-coded-env"],
)
def test_the_flip_comparison_catches_a_broken_copy(
    tmp_path: Path, region_keys: list[str], mutation: tuple[str, str], why: str
) -> None:
    copy = tmp_path / "envs" / "prod"
    shutil.copytree(ENV, copy)
    main = copy / "main.tf"
    old, new = mutation
    assert old in main.read_text(), why
    main.write_text(main.read_text().replace(old, new))
    assert flip_diff(copy, region_keys[0], region_keys[1]) != expected_flip(region_keys), why


def _text(node: Tree | Token) -> str:
    """An expression's source, without whitespace or comments (for reference comparisons)."""
    if isinstance(node, Token):
        return "" if node.type in ("NL_OR_COMMENT",) else str(node).strip()
    return "".join(_text(c) for c in node.children)
