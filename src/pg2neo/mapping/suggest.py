"""`pg2neo mapping suggest`: a first mapping file proposed from the PostgreSQL catalog (pure: facts in, YAML out).

Place in the data flow: before `mapping`. It writes the file that `pg2neo.mapping.resolve` then checks, and every
choice is one the validator accepts, so `pg2neo init` takes the suggestion unchanged. The conventions (docs/suggest.md):

- a table with a usable key is a node; its label is the table name in singular CamelCase (`content_items` ->
  `ContentItem`); a `neo4j_node_id`-style UUID column is the node key (published as `id`), else the primary key,
  else the smallest unique NOT NULL key; a numeric or array key is kept exact as its text (`types: string`);
- a foreign key is a relationship from the row that holds it to the row it references (`direction: out`):
  `messages.thread_id -> threads` is `(:Message)-[:IN_THREAD]->(:Thread)` when the column names its target, and
  otherwise is named after the column's role: `reviews.author_id -> users` is `(:Review)-[:AUTHOR]->(:User)`;
- a join table (its primary key is exactly two foreign keys, or a surrogate key plus two NOT NULL foreign keys that
  are unique together) that no other table references is a relationship, its other columns its properties;
- a table without a usable key, a partition, an extension's table are left out with a comment saying why.
"""

from __future__ import annotations

import fnmatch
import json
import re
import unicodedata
from dataclasses import dataclass, field

from pg2neo.mapping.catalog import CatalogColumn, CatalogTable, ForeignKey
from pg2neo.mapping.resolve import IDENTIFIER, RESERVED_PREFIX, key_problem
from pg2neo.mapping.suggest_catalog import TableFacts

# -- names ------------------------------------------------------------------------------------------------------------

# Plurals that no suffix rule turns back (and a few the rules below would get wrong: `geniuses`, `menus`).
_IRREGULAR = {
    "people": "person", "men": "man", "women": "woman", "children": "child", "mice": "mouse", "geese": "goose",
    "feet": "foot", "teeth": "tooth", "oxen": "ox", "criteria": "criterion", "phenomena": "phenomenon",
    "indices": "index", "vertices": "vertex", "matrices": "matrix", "appendices": "appendix", "crises": "crisis",
    "theses": "thesis", "hypotheses": "hypothesis", "diagnoses": "diagnosis", "aliases": "alias", "biases": "bias",
    "canvases": "canvas", "atlases": "atlas", "gases": "gas", "lenses": "lens", "quizzes": "quiz", "menus": "menu",
    "gurus": "guru", "emus": "emu", "axes": "axis", "cacti": "cactus", "radii": "radius", "stimuli": "stimulus",
    "syllabi": "syllabus", "alumni": "alumnus", "fungi": "fungus", "nuclei": "nucleus", "octopi": "octopus",
    "geniuses": "genius", "wolves": "wolf", "halves": "half", "knives": "knife", "lives": "life", "wives": "wife",
    "leaves": "leaf", "shelves": "shelf", "selves": "self", "calves": "calf", "thieves": "thief", "loaves": "loaf",
    "scarves": "scarf", "wharves": "wharf", "hooves": "hoof", "elves": "elf", "abuses": "abuse", "excuses": "excuse",
    "uses": "use", "fuses": "fuse", "muses": "muse", "refuses": "refuse",
}  # fmt: skip
# Words ending in `s` that are singular (or have no singular worth writing).
_UNCOUNTABLE = {
    "news", "series", "species", "analytics", "statistics", "physics", "economics", "mathematics", "politics",
    "ethics", "logistics", "chassis", "corps", "headquarters", "means", "scissors", "pants", "jeans", "measles",
    "diabetes", "rabies", "mumps", "alms", "goods", "thanks", "odds", "whereabouts", "lens",
}  # fmt: skip
# Singulars ending in `ie`, `che` and `oe`, whose plurals the suffix rules would cut too short.
_IE_WORDS = {
    "movie", "cookie", "rookie", "calorie", "zombie", "selfie", "smoothie", "hippie", "goalie", "genie", "pixie",
    "brownie", "freebie", "newbie", "pie", "tie", "lie", "die", "auntie", "birdie", "prairie", "sortie", "lingerie",
}  # fmt: skip
_CHE_WORDS = {
    "cache",
    "niche",
    "avalanche",
    "headache",
    "moustache",
    "mustache",
    "psyche",
    "cliche",
    "quiche",
    "creche",
}
_OE_WORDS = {"shoe", "horseshoe", "toe", "tiptoe", "canoe", "oboe", "hoe", "foe", "floe", "throe", "mistletoe"}


def singular(word: str) -> str:
    """The singular of one lower-case English word; a word that already is singular stays as it is."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    # No vowel: an abbreviation (`sms`, `gps`, `dns`), not a plural.
    if not w.endswith("s") or w in _UNCOUNTABLE or not re.search(r"[aeiouy]", w[:-1]):
        return w
    if w.endswith(("ss", "us", "is")):  # class, status, analysis
        return w
    if w.endswith("ies"):
        return w[:-1] if w[:-1] in _IE_WORDS else w[:-3] + "y"
    if w.endswith("sses"):
        return w[:-2]
    if w.endswith("uses") and len(w) > 4:
        # statuses, buses, campuses; but houses, causes, warehouses (a vowel before the `u`)
        return w[:-1] if w[-5] in "aeiou" else w[:-2]
    if w.endswith("yses"):
        return w[:-2] + "is"
    if w.endswith(("xes", "zzes")):
        return w[:-2]
    if w.endswith(("ches", "shes")):
        return w[:-1] if w[:-1] in _CHE_WORDS else w[:-2]
    if w.endswith("oes"):
        return w[:-1] if w[:-1] in _OE_WORDS else w[:-2]
    return w[:-1]


def words(name: str) -> list[str]:
    """The lower-case ASCII words of an identifier: `content_items`, `ContentItems`, `content-items` alike."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    split = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", ascii_name)
    return [w.lower() for w in re.split(r"[^A-Za-z0-9]+", split) if w]


def _singular_words(name: str) -> list[str]:
    found = words(name)
    return [*found[:-1], singular(found[-1])] if found else []


def _identifier(text: str) -> str:
    return "_" + text if text[:1].isdigit() else text


def label_for(table_name: str) -> str:
    """The node label of a table: singular CamelCase (`content_items` -> `ContentItem`, `people` -> `Person`)."""
    return _identifier("".join(w.capitalize() for w in _singular_words(table_name)))


def _upper(parts: list[str]) -> str:
    return _identifier("_".join(parts).upper())


def property_name(column: str) -> str:
    """A valid property name for a column (the column's own name when it is one)."""
    if IDENTIFIER.match(column) and not column.lower().startswith(RESERVED_PREFIX):
        return column
    fixed = re.sub(r"[^A-Za-z0-9_]+", "_", unicodedata.normalize("NFKD", column).encode("ascii", "ignore").decode())
    fixed = fixed.strip("_") if fixed.lower().startswith(RESERVED_PREFIX) else fixed
    return _identifier(fixed) if fixed else "column"


_KEY_SUFFIXES = {"id", "uuid", "guid", "key", "code", "fk", "ref", "no", "num", "number"}


def fk_role(columns: tuple[str, ...], ref_columns: tuple[str, ...] = ()) -> list[str]:
    """What a foreign key's columns call the row they reference: `author_id` -> [author], `created_by` ->
    [created, by], `tariff_rate` referencing `rate` -> [tariff], `(wh_region, wh_num)` -> [wh]; [] when the columns
    say nothing beyond the key."""
    if len(columns) == 1:
        found = words(columns[0])
        ref = words(ref_columns[0]) if len(ref_columns) == 1 else []
        if ref and len(found) > len(ref) and found[-len(ref) :] == ref:
            return found[: -len(ref)]
        return found[:-1] if found and found[-1] in _KEY_SUFFIXES else found
    lists = [words(c) for c in columns]
    common: list[str] = []
    for group in zip(*lists, strict=False):
        if len(set(group)) != 1:
            break
        common.append(group[0])
    return common


def _abbreviates(short: str, long: str) -> bool:
    """`wh` for `warehouse`, `cat` for `category`, `dept` for `department`: same first letter, letters in order."""
    if not 2 <= len(short) <= 4 or short[0] != long[:1]:
        return False
    rest = iter(long)
    return all(letter in rest for letter in short)


def names_target(role: list[str], target_table: str) -> bool:
    """Whether a foreign key's role is just its target (`thread_id` -> threads, `item_id` -> content_items)."""
    target = _singular_words(target_table)
    plural = words(target_table)
    if not role or role in (target, plural) or (len(role) < len(target) and target[-len(role) :] == role):
        return True
    return _abbreviates("".join(role), "".join(target))


def fk_type(columns: tuple[str, ...], target_table: str, ref_columns: tuple[str, ...] = ()) -> str:
    """The relationship type of a foreign key drawn from its row to the referenced row."""
    role = fk_role(columns, ref_columns)
    if names_target(role, target_table):
        return _upper(["in", *_singular_words(target_table)])
    return _upper(role)


def reverse_type(rel_type: str, source_table: str) -> str:
    """A type that reads the other way, offered in the comment: IN_THREAD on messages -> HAS_MESSAGE."""
    if rel_type.startswith("IN_"):
        return _upper(["has", *_singular_words(source_table)])
    return f"{rel_type}_OF"


def join_type(join_table: str, from_table: str) -> str:
    """The type of a join table's relationship: `thread_content` from threads -> HAS_CONTENT, `stock` -> STOCK."""
    name = words(join_table)
    for prefix in (_singular_words(from_table), words(from_table)):
        if prefix and len(name) > len(prefix) and name[: len(prefix)] == prefix:
            rest = name[len(prefix) :]
            return _upper(["has", *rest[:-1], singular(rest[-1])])
    return _upper([*name[:-1], singular(name[-1])]) if name else "RELATED_TO"


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate


# -- the choices ------------------------------------------------------------------------------------------------------

_NODE_ID_NAMES = {"neo4j_node_id", "neo4j_id", "node_id", "graph_id", "graph_node_id"}
_VERSION_NAMES = ("version", "row_version", "lock_version")
_UPDATED_NAMES = ("updated_at", "modified_at", "last_modified", "last_updated", "updated_on")


@dataclass(frozen=True)
class SuggestOptions:
    schemas: tuple[str, ...] = ("public",)
    tables: tuple[str, ...] = ()  # glob patterns (name or schema.name); empty: every table
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeyChoice:
    columns: tuple[str, ...]
    properties: tuple[str, ...] | None  # None: the column names
    as_text: tuple[str, ...]  # key columns written `types: string` to stay exact
    why: str


@dataclass(frozen=True)
class FkChoice:
    type: str
    columns: tuple[str, ...]
    target: str  # qualified
    comment: str


@dataclass(frozen=True)
class NodeChoice:
    table: CatalogTable
    label: str
    key: KeyChoice
    rename: tuple[tuple[str, str], ...]
    version_column: str | None
    updated_at_column: str | None
    relationships: tuple[FkChoice, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Endpoint:
    table: str  # qualified
    columns: tuple[str, ...]


@dataclass(frozen=True)
class JoinChoice:
    table: CatalogTable
    type: str
    start: Endpoint
    end: Endpoint
    rename: tuple[tuple[str, str], ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Skipped:
    table: str  # qualified
    reason: str


@dataclass(frozen=True)
class Suggestion:
    schema: str  # the file's default schema
    nodes: tuple[NodeChoice, ...]
    joins: tuple[JoinChoice, ...]
    skipped: tuple[Skipped, ...]
    options: SuggestOptions = field(default_factory=SuggestOptions)

    def yaml(self) -> str:
        return render(self)


def _cols(columns: tuple[str, ...]) -> str:
    return ", ".join(columns)


def _key_columns_usable(table: CatalogTable, columns: tuple[str, ...]) -> tuple[tuple[str, ...], str | None]:
    """(columns to map as text, None) when `columns` can be an exact node key, else ((), why not)."""
    as_text = []
    for name in columns:
        col = table.columns[name]
        if not col.not_null:
            return (), f"column {name} of key ({_cols(columns)}) may be NULL"
        if key_problem(col, "native") is None:
            continue
        problem = key_problem(col, "string")
        if problem is not None:
            return (), problem
        as_text.append(name)
    return tuple(as_text), None


def _node_id_column(table: CatalogTable) -> CatalogColumn | None:
    for col in table.columns.values():
        named = col.name.lower() in _NODE_ID_NAMES
        if named and col.base_type == "uuid" and col.not_null and (col.name,) in table.unique_keys:
            return col
    return None


def choose_key(table: CatalogTable) -> KeyChoice | str:
    """The node key of a table, or why it has none (the validator's rules: unique, NOT NULL, exact)."""
    node_id = _node_id_column(table)
    if node_id is not None and node_id.name != "id":
        return KeyChoice(
            (node_id.name,), ("id",), (), f"keyed by {node_id.name} (a unique NOT NULL uuid), published as `id`"
        )
    problems = []
    candidates = [table.primary_key] if table.primary_key else []
    positions = {name: i for i, name in enumerate(table.columns)}
    others = sorted(
        (k for k in table.unique_keys if k != table.primary_key), key=lambda k: (len(k), [positions[c] for c in k])
    )
    for key in [*candidates, *others]:
        as_text, problem = _key_columns_usable(table, key)
        if problem is not None:
            problems.append(problem)
            continue
        what = "its primary key" if key == table.primary_key else "its unique NOT NULL key"
        why = f"keyed by {what} ({_cols(key)})"
        if as_text:
            why += (
                f"; {_cols(as_text)} kept exact as text (`types: string`): a numeric or array key would not stay "
                f"exact as a Neo4j value"
            )
        return KeyChoice(key, None, as_text, why)
    if not table.unique_keys:
        return "no primary key and no unique key; add a primary key, or map it by hand with `key:`"
    return "no key can be a node key: " + "; ".join(problems)


def _usable_name(facts: TableFacts) -> str | None:
    table = facts.table
    if facts.extension is not None:
        return f"a table of the extension `{facts.extension}`, not your data"
    if facts.partition_of is not None:
        return f"a partition of {facts.partition_of}; its rows are captured through that table"
    if table.schema == "pg2neo":
        return "pg2neo's own bookkeeping"
    if "." in table.name or "." in table.schema:
        return "its name contains a dot, which the mapping file cannot tell from `schema.table`; rename it"
    return None


def _matches(table: CatalogTable, pattern: str) -> bool:
    """A pattern with a dot is matched against `schema.table`, one without against the table's name."""
    return fnmatch.fnmatchcase(table.qualified if "." in pattern else table.name, pattern)


def _chosen(table: CatalogTable, options: SuggestOptions) -> str | None:
    if options.tables and not any(_matches(table, p) for p in options.tables):
        return "not chosen by --tables"
    if any(_matches(table, p) for p in options.exclude):
        return "left out by --exclude"
    return None


def _join_shape(
    table: CatalogTable, keyed: dict[str, KeyChoice], referenced: set[str]
) -> tuple[ForeignKey, ForeignKey, str] | None:
    """The two foreign keys that make `table` a join table (start first), and why; None when it is not one."""
    if table.qualified in referenced:
        return None
    # A foreign key to the table itself draws a relationship between two of its own rows: it is a node.
    if any(f.ref_table == table.qualified for f in table.foreign_keys):
        return None
    fks = table.foreign_keys
    pk = set(table.primary_key)
    pairs = [
        (a, b)
        for i, a in enumerate(fks)
        for b in fks[i + 1 :]
        if not set(a.columns) & set(b.columns) and set(a.columns) | set(b.columns) == pk
    ]
    if pairs:
        a, b = pairs[0]
        why = "its primary key is two foreign keys"
    else:
        if len(table.primary_key) != 1 or len(table.foreign_keys) != 2:
            return None
        a, b = table.foreign_keys
        pair = set(a.columns) | set(b.columns)
        if table.primary_key[0] in pair or set(a.columns) & set(b.columns):
            return None
        if not all(table.columns[c].not_null for c in pair):
            return None
        if not any(set(k) == pair for k in table.unique_keys):
            return None
        why = f"a surrogate key ({table.primary_key[0]}) and two NOT NULL foreign keys unique together"
    if not all(f.ref_table in keyed for f in (a, b)):
        return None
    # The start is the endpoint whose columns come first: in the primary key a join table declares, else in the table.
    order = {name: i for i, name in enumerate(table.primary_key if pairs else tuple(table.columns))}
    first, second = sorted((a, b), key=lambda f: min(order.get(c, len(order)) for c in f.columns))
    return first, second, why


def _not_a_join(table: CatalogTable, tables: dict[str, CatalogTable]) -> list[str]:
    """Why a table shaped like a join table is a node, for its comment."""
    fks = [f for f in table.foreign_keys if f.ref_table != table.qualified]
    if len(fks) != 2 or _node_id_column(table) is not None:
        return []
    pair = set(fks[0].columns) | set(fks[1].columns)
    composite = pair == set(table.primary_key)
    surrogate = len(table.primary_key) == 1 and table.primary_key[0] not in pair
    if not (composite or surrogate) or not all(table.columns[c].not_null for c in pair):
        return []
    unique = composite or any(set(k) == pair for k in table.unique_keys)
    referrers = sorted(
        t.qualified
        for t in tables.values()
        if t is not table and any(f.ref_table == table.qualified for f in t.foreign_keys)
    )
    if referrers and unique:
        return [f"shaped like a join table, but referenced by {', '.join(referrers)}, so it is a node"]
    if not unique and not referrers:
        return [
            f"two foreign keys and a surrogate key ({table.primary_key[0]}), but ({_cols(tuple(sorted(pair)))}) are "
            f"not unique together: kept as a node (an entity, like an order); to draw each row as one relationship "
            f"instead, move it under `relationships:` with `from:` and `to:` (docs/suggest.md)"
        ]
    return []


def _renames(table: CatalogTable, columns: list[str], taken: set[str]) -> tuple[tuple[str, str], ...]:
    """Property names for `columns`: their own when valid and free; valid names keep theirs before fixed ones."""
    renames = []
    valid = [c for c in columns if property_name(c) == c]
    for name in valid + [c for c in columns if c not in valid]:
        prop = property_name(name)
        if prop in taken:
            prop = _unique(f"pg_{prop}", taken)
        else:
            taken.add(prop)
        if prop != name:
            renames.append((name, prop))
    order = {c: i for i, c in enumerate(table.columns)}
    return tuple(sorted(renames, key=lambda r: order[r[0]]))


def _special_column(table: CatalogTable, names: tuple[str, ...], types: set[str]) -> str | None:
    for name in names:
        col = table.columns.get(name)
        if col is not None and col.base_type in types:
            return name
    return None


def suggest(facts: list[TableFacts], options: SuggestOptions = SuggestOptions()) -> Suggestion:
    """Propose a mapping for the tables in `facts` (those of `options.schemas`)."""
    default_schema = options.schemas[0] if options.schemas else "public"
    skipped: list[Skipped] = []
    keyed: dict[str, KeyChoice] = {}
    tables: dict[str, CatalogTable] = {}
    for item in facts:
        table = item.table
        reason = _chosen(table, options) or _usable_name(item)
        key = choose_key(table) if reason is None else reason
        if isinstance(key, str):
            skipped.append(Skipped(table.qualified, key))
            continue
        keyed[table.qualified] = key
        tables[table.qualified] = table
    skip_reason = {s.table: s.reason for s in skipped}

    referenced = {f.ref_table for t in tables.values() for f in t.foreign_keys if f.ref_table != t.qualified}
    shapes: dict[str, tuple[ForeignKey, ForeignKey, str]] = {}
    for name, table in tables.items():
        shape = None if _node_id_column(table) else _join_shape(table, keyed, referenced)
        if shape is not None:
            shapes[name] = shape
    node_tables = {name: t for name, t in tables.items() if name not in shapes}

    labels: dict[str, str] = {}
    taken_labels: set[str] = set()
    label_notes: dict[str, str] = {}
    for name, table in node_tables.items():
        wanted = label_for(table.name) or "Table"
        label = wanted
        for candidate in (wanted, _identifier("".join(w.capitalize() for w in words(table.name)))):
            if candidate and candidate not in taken_labels:
                label = candidate
                break
        else:
            label = _unique(_identifier("".join(w.capitalize() for w in words(table.schema))) + wanted, taken_labels)
        taken_labels.add(label)
        labels[name] = label
        if label != wanted:
            owner = next((n for n, lab in labels.items() if lab == wanted), "another table")
            label_notes[name] = f"label {wanted} is already {owner}'s (one label, one table): this one is {label}"

    rel_types: set[str] = set()
    nodes = []
    for name, table in node_tables.items():
        extra = [label_notes[name]] if name in label_notes else []
        extra += _not_a_join(table, tables)
        node, types = _node(table, labels, keyed[name], node_tables, skip_reason, shapes, extra)
        rel_types |= types
        nodes.append(node)
    joins = [_join(tables[name], shape, labels, rel_types) for name, shape in shapes.items()]
    return Suggestion(default_schema, tuple(nodes), tuple(joins), tuple(skipped), options)


def _node(
    table: CatalogTable,
    labels: dict[str, str],
    key: KeyChoice,
    node_tables: dict[str, CatalogTable],
    skip_reason: dict[str, str],
    shapes: dict[str, tuple[ForeignKey, ForeignKey, str]],
    extra_notes: list[str],
) -> tuple[NodeChoice, set[str]]:
    label = labels[table.qualified]
    notes = [f"{table.qualified} -> (:{label}), {key.why}", *extra_notes]
    key_props = key.properties or tuple(property_name(c) for c in key.columns)
    if key.properties is None and key_props != key.columns:
        notes.append(f"key column(s) {_cols(key.columns)} published as {_cols(key_props)} (valid property names)")
    taken = set(key_props)
    renames = _renames(table, [c for c in table.columns if c not in key.columns], taken)
    for column, prop in renames:
        why = "would clash with the key property" if property_name(column) in key_props else "is not a valid name"
        notes.append(f"column {column} {why}: copied as {prop}")
    fks = sorted(table.foreign_keys, key=lambda f: ([list(table.columns).index(c) for c in f.columns], f.ref_table))
    used: set[str] = set()
    rels = []
    for fk in fks:
        if fk.ref_table not in node_tables:
            why = skip_reason.get(fk.ref_table, "it is not in the chosen schemas")
            if fk.ref_table in shapes:
                why = "it is a join table (a relationship)"
            notes.append(f"not drawn: ({_cols(fk.columns)}) -> {fk.ref_table}, which is not a node: {why}")
            continue
        rel_type = fk_type(fk.columns, fk.ref_table.split(".", 1)[1], fk.ref_columns)
        if rel_type in used:
            role_words = fk_role(fk.columns, fk.ref_columns)
            role = _upper(role_words) if role_words else rel_type
            rel_type = role if role not in used else rel_type
        rel_type = _unique(rel_type, used)
        target = labels[fk.ref_table]
        comment = (
            f"(:{label})-[:{rel_type}]->(:{target}) by {_cols(fk.columns)}; to draw it the other way: "
            f"direction: in, type: {reverse_type(rel_type, table.name)}"
        )
        rels.append(FkChoice(rel_type, fk.columns, fk.ref_table, comment))
    version = _special_column(table, _VERSION_NAMES, {"int2", "int4", "int8"})
    updated = _special_column(table, _UPDATED_NAMES, {"timestamp", "timestamptz"})
    node = NodeChoice(table, label, key, renames, version, updated, tuple(rels), tuple(notes))
    return node, used


def _join(
    table: CatalogTable,
    shape: tuple[ForeignKey, ForeignKey, str],
    labels: dict[str, str],
    rel_types: set[str],
) -> JoinChoice:
    start, end, why = shape
    rel_type = _unique(join_type(table.name, start.ref_table.split(".", 1)[1]), rel_types)
    endpoint_columns = set(start.columns) | set(end.columns)
    others = [c for c in table.columns if c not in endpoint_columns]
    renames = _renames(table, others, set())
    a, b = labels[start.ref_table], labels[end.ref_table]
    notes = [
        f"{table.qualified}: {why}, so each row is a relationship (:{a})-[:{rel_type}]->(:{b})"
        + (f" with properties {_cols(tuple(others))}" if others else ""),
        "swap `from` and `to` to draw it the other way",
    ]
    notes += [f"column {c} is not a valid name: copied as {p}" for c, p in renames]
    for fk in table.foreign_keys:
        if fk not in (start, end):
            notes.append(
                f"the foreign key ({_cols(fk.columns)}) -> {fk.ref_table} stays a property: a relationship cannot "
                f"start another relationship"
            )
    return JoinChoice(
        table,
        rel_type,
        Endpoint(start.ref_table, start.columns),
        Endpoint(end.ref_table, end.columns),
        renames,
        tuple(notes),
    )


# -- the file ---------------------------------------------------------------------------------------------------------

_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def scalar(text: str) -> str:
    """A YAML scalar that reads back as exactly `text` (double-quoted, JSON escapes, unless plainly safe)."""
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)


def _list(items: tuple[str, ...]) -> str:
    return scalar(items[0]) if len(items) == 1 else "[" + ", ".join(scalar(i) for i in items) + "]"


def _map(pairs: tuple[tuple[str, str], ...]) -> str:
    return "{" + ", ".join(f"{scalar(k)}: {scalar(v)}" for k, v in pairs) + "}"


def _comment(text: str, indent: str) -> str:
    return f"{indent}# " + " ".join(text.split()) + "\n"


def _ref(qualified: str, default_schema: str) -> str:
    schema, name = qualified.split(".", 1)
    return scalar(name if schema == default_schema else qualified)


def render(s: Suggestion) -> str:
    """The mapping file: YAML with a comment on every choice."""
    out = [
        "# A mapping suggested by `pg2neo mapping suggest` from the catalog of schema(s) "
        f"{', '.join(s.options.schemas)}.\n",
        "# Labels, relationship types and directions are guesses from names: review and edit them, then run\n",
        "# `pg2neo init`. Conventions: docs/suggest.md; every key: docs/mapping.md.\n",
        "version: 1\n",
        f"schema: {scalar(s.schema)}\n",
        "\nnodes:\n" if s.nodes else "\nnodes: []\n",
    ]
    for node in s.nodes:
        out.append("\n")
        out += [_comment(n, "  ") for n in node.notes]
        out.append(f"  - table: {_ref(node.table.qualified, s.schema)}\n    label: {scalar(node.label)}\n")
        if node.key.columns != node.table.primary_key:
            out.append(f"    key: {_list(node.key.columns)}\n")
        key_props = node.key.properties or tuple(property_name(c) for c in node.key.columns)
        if key_props != node.key.columns:
            out.append(f"    key_property: {_list(key_props)}\n")
        if node.rename or node.key.as_text:
            out.append("    properties:\n")
            if node.rename:
                out.append(f"      rename: {_map(node.rename)}\n")
            if node.key.as_text:
                out.append(f"      types: {_map(tuple((c, 'string') for c in node.key.as_text))}\n")
        if node.version_column:
            out.append(f"    version_column: {scalar(node.version_column)}\n")
        if node.updated_at_column:
            out.append(f"    updated_at_column: {scalar(node.updated_at_column)}\n")
        if node.relationships:
            out.append("    relationships:\n")
        for rel in node.relationships:
            out.append(_comment(rel.comment, "      "))
            out.append(
                f"      - {{type: {scalar(rel.type)}, columns: {_list(rel.columns)}, "
                f"to: {_ref(rel.target, s.schema)}}}\n"
            )
    if s.joins:
        out.append("\nrelationships:\n")
    for join in s.joins:
        out.append("\n")
        out += [_comment(n, "  ") for n in join.notes]
        out.append(f"  - table: {_ref(join.table.qualified, s.schema)}\n    type: {scalar(join.type)}\n")
        for side, end in (("from", join.start), ("to", join.end)):
            # A join's endpoint written without a schema is looked up in the join table's schema.
            plain = join.table.schema == s.schema and end.table.split(".", 1)[0] == s.schema
            where = _ref(end.table, s.schema) if plain else scalar(end.table)
            out.append(f"    {side}: {{table: {where}, columns: {_list(end.columns)}}}\n")
        if join.rename:
            out.append(f"    properties:\n      rename: {_map(join.rename)}\n")
    if s.skipped:
        out.append("\n# Left out (map them by hand if you want them; docs/mapping.md):\n")
        grouped: dict[str, list[str]] = {}
        for item in s.skipped:
            grouped.setdefault(item.reason, []).append(item.table)
        for reason, names in grouped.items():
            out.append("#   " + " ".join(f"{', '.join(names)}: {reason}".split()) + "\n")
    return "".join(out)
