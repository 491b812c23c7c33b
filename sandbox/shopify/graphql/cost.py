"""Calculated query cost (shopify.dev "GraphQL Admin API rate limits"): scalars and enums cost
0, an object 1, a connection 2 plus its page size times the cost of one node, a mutation 10.
The requested cost uses the page sizes asked for; the actual cost the nodes returned."""

from __future__ import annotations

from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    value_from_ast_untyped,
)

MUTATION_COST = 10
CONNECTION_COST = 2
MAX_QUERY_COST = 1000  # a single query above this is refused (MAX_COST_EXCEEDED)


class QueryCost:
    """The cost of one operation of a parsed document."""

    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: dict[str, Any] | None,
    ) -> None:
        self.schema = schema
        self.operation = operation
        self.variables = variables or {}
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }

    def requested(self) -> int:
        return self._operation(None)

    def actual(self, data: dict[str, Any] | None) -> int:
        return self._operation(data or {})

    def _operation(self, data: dict[str, Any] | None) -> int:
        if self.operation.operation == OperationType.MUTATION:
            return MUTATION_COST * len(self._fields(self.operation.selection_set))
        return self._selections(self.schema.query_type, self.operation.selection_set, data)

    def _selections(
        self,
        parent: GraphQLObjectType | None,
        selection_set: SelectionSetNode | None,
        data: dict[str, Any] | None,
    ) -> int:
        if parent is None or selection_set is None:
            return 0
        total = 0
        for node in self._fields(selection_set):
            definition = parent.fields.get(node.name.value)
            named = get_named_type(definition.type) if definition else None
            if not isinstance(named, GraphQLObjectType):
                continue  # scalars, enums, __typename: free
            value = (
                None
                if data is None
                else data.get(node.alias.value if node.alias else node.name.value)
            )
            if named.name.endswith("Connection"):
                total += self._connection(named, node, value, data is None)
            elif isinstance(value, list):
                total += sum(1 + self._selections(named, node.selection_set, v) for v in value if v)
            else:
                total += 1 + self._selections(
                    named, node.selection_set, value if data is not None else None
                )
        return total

    def _connection(
        self, connection: GraphQLObjectType, node: FieldNode, value: Any, requested: bool
    ) -> int:
        edge_type = get_named_type(connection.fields["edges"].type)
        node_type = get_named_type(edge_type.fields["node"].type)
        per_node = []  # (selection set, data key) of every place the node is selected
        for child in self._fields(node.selection_set):
            key = child.alias.value if child.alias else child.name.value
            if child.name.value == "nodes":
                per_node.append((child.selection_set, key, None))
            elif child.name.value == "edges":
                for grandchild in self._fields(child.selection_set):
                    if grandchild.name.value == "node":
                        inner = grandchild.alias.value if grandchild.alias else "node"
                        per_node.append((grandchild.selection_set, key, inner))
        if requested:
            size = self._argument(node, "first") or self._argument(node, "last") or 0
            one = sum(1 + self._selections(node_type, s, None) for s, _, _ in per_node)
            return CONNECTION_COST + size * one
        total = CONNECTION_COST
        for selection_set, key, inner in per_node:
            for item in (value or {}).get(key) or []:
                item_data = item.get(inner) if inner else item
                total += 1 + self._selections(node_type, selection_set, item_data or {})
        return total

    def _argument(self, node: FieldNode, name: str) -> int | None:
        for argument in node.arguments:
            if argument.name.value == name:
                value = value_from_ast_untyped(argument.value, self.variables)
                return value if isinstance(value, int) else None
        return None

    def _fields(self, selection_set: SelectionSetNode | None) -> list[FieldNode]:
        out: list[FieldNode] = []
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                out.append(selection)
            elif isinstance(selection, InlineFragmentNode):
                out.extend(self._fields(selection.selection_set))
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                out.extend(self._fields(fragment.selection_set if fragment else None))
        return out
