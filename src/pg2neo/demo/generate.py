"""Demo data for the reference schema (``schema.sql``): a deterministic generator and its COPY loader.

``scale`` is the number of ``content_items``; every other table follows a fixed ratio (see ``plan``), about
12 rows per content item in total, so ``scale=85_000`` gives about one million rows:

==================  =======================  ==================================================
table               rows                     shape
==================  =======================  ==================================================
tenants             max(2, scale // 500)
users               max(2, scale // 5)       every tenant has at least one user
programs            max(2, scale // 50)
projects            max(2, scale // 10)      every tenant has a project; ~20% without program
content_items       scale                    ~15% without project, ~10% without author
content_chunks      ~4 × scale               1–7 per content item, chunk_index 0..n-1
threads             max(2, scale // 2)       ~20% have a parent thread with a smaller id
messages            ~3 × scale               0–12 per thread
thread_content      ~1 × scale               0–2 distinct threads per content item
message_context     ~2 × scale               0–2 distinct chunks per message
==================  =======================  ==================================================

The data is realistic enough to exercise a sync: unicode of every kind (accents, decomposed accents,
CJK, emoji with ZWJ sequences and flags, right-to-left scripts), quotes, backslashes and tabs, NULL in
every nullable column, empty and NULL arrays, nested ``jsonb``, ``real[]`` embeddings (values exactly
representable in float32), and bodies longer than 8 kB (content item 1 and every 50th one after it, and
about 2% of messages) so that TOAST storage is used.

Row generation is pure (``plan`` and ``iter_rows`` never touch a database) and deterministic: the same
``(scale, seed)`` always yields the same rows, UUIDs included. Loading is a thin layer of COPY statements.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

SCHEMA_SQL: str = resources.files("pg2neo.demo").joinpath("schema.sql").read_text(encoding="utf-8")

TABLES: tuple[str, ...] = (
    "tenants",
    "users",
    "programs",
    "projects",
    "content_items",
    "content_chunks",
    "threads",
    "messages",
    "thread_content",
    "message_context",
)
"""The reference tables in dependency order (parents before children)."""

COLUMNS: dict[str, tuple[str, ...]] = {
    "tenants": ("id", "name", "plan", "created_at", "updated_at"),
    "users": ("id", "tenant_id", "email", "display_name", "is_active", "created_at", "updated_at"),
    "programs": ("id", "tenant_id", "name", "description", "starts_on", "created_at", "updated_at"),
    "projects": (
        "id",
        "tenant_id",
        "program_id",
        "name",
        "description",
        "budget",
        "created_at",
        "updated_at",
    ),
    "content_items": (
        "id",
        "neo4j_node_id",
        "tenant_id",
        "project_id",
        "author_id",
        "kind",
        "title",
        "description",
        "body",
        "tags",
        "metadata",
        "created_at",
        "updated_at",
    ),
    "content_chunks": (
        "id",
        "neo4j_node_id",
        "content_item_id",
        "chunk_index",
        "text",
        "token_count",
        "embedding",
        "created_at",
        "updated_at",
    ),
    "threads": (
        "id",
        "neo4j_node_id",
        "tenant_id",
        "project_id",
        "parent_thread_id",
        "created_by",
        "title",
        "created_at",
        "updated_at",
    ),
    "messages": (
        "id",
        "neo4j_node_id",
        "thread_id",
        "author_id",
        "role",
        "body",
        "token_count",
        "created_at",
        "updated_at",
    ),
    "thread_content": ("thread_id", "content_item_id", "relevance_score", "added_at"),
    "message_context": ("message_id", "chunk_id", "rank"),
}
"""The columns each generated row fills, in row order (``version`` is left to its default)."""

IDENTITY_TABLES: tuple[str, ...] = ("content_items", "content_chunks", "threads", "messages")
"""Tables with a bigint identity ``id``: the generator supplies the ids and then advances the sequences."""

_TYPES: tuple[str, ...] = ("content_kind", "message_role")

Row = tuple[Any, ...]

LONG_BODY_MIN_CHARS = 8_500
"""A long body has at least this many characters, hence more than 8 kB of UTF-8."""

# ------------------------------------------------------------------------------------------------------
# Random values (also used by the live workload)
# ------------------------------------------------------------------------------------------------------

_ASCII_TEXT = """
graph sync replica node edge change stream batch commit offset schema table column index query
document video audio note link report budget review launch roadmap meeting summary draft final
customer partner vendor invoice contract policy release feature bug fix test deploy rollback
cluster shard leader follower latency throughput snapshot backfill cursor checkpoint retry
the a an of to in on for with by from about into over after before under between through
quick brown fox jumps lazy dog alpha beta gamma delta epsilon zeta theta lambda sigma omega
north south east west spring summer autumn winter morning evening river mountain forest ocean
data model vector embedding chunk token context thread message project program tenant user
is are was were be been has have had will would can could should may might must shall
"""
_ASCII_WORDS: tuple[str, ...] = tuple(_ASCII_TEXT.split())

_UNICODE_WORDS: tuple[str, ...] = (
    "café",
    "naïve",
    "Zürich",
    "façade",
    "crème brûlée",
    "São Paulo",
    "Ørsted",
    "Straße",
    "Łódź",
    "résumé",
    "cafe\u0301",  # decomposed é (NFD)
    "Ελληνικά",
    "Москва",
    "数据同步",
    "图数据库",
    "東京タワー",
    "ひらがな",
    "그래프",
    "مرحبا",
    "بيانات",
    "שלום",
    "עברית",
    "नमस्ते",
    "ภาษาไทย",
    "🚀",
    "📈",
    "🔥",
    "✨",
    "👩‍💻",
    "🇫🇷",
    "👍🏽",
    "it's",
    '"quoted"',
    "back\\slash",
    "50%",
    "tab\tseparated",
    "{curly}",
    "a,b;c",
    "<tag>",
)

_VOCABULARY: tuple[str, ...] = _ASCII_WORDS * 3 + _UNICODE_WORDS
_SENTENCE_ENDS: tuple[str, ...] = (".", ".", ".", ".", "!", "?", ".\n\n")

_TAGS: tuple[str, ...] = (
    "finance",
    "legal",
    "engineering",
    "sales",
    "onboarding",
    "q3",
    "urgent",
    "archive",
    "données",
    "機械学習",
    "🚀launch",
    "مهم",
    "c++",
    "with space",
    'quote"d',
    "comma,tag",
)

_FIRST_NAMES: tuple[str, ...] = (
    "Alice",
    "Bob",
    "Chloé",
    "Dmitri",
    "Émile",
    "Fatima",
    "Giulia",
    "Håkon",
    "Ines",
    "José",
    "Kenji",
    "Léa",
    "Mohammed",
    "Nadia",
    "Oğuz",
    "Priya",
    "Quentin",
    "Renée",
    "Søren",
    "Zoë",
    "美咲",
    "太郎",
    "지훈",
    "محمد",
    "נועה",
)
_LAST_NAMES: tuple[str, ...] = (
    "Smith",
    "Müller",
    "García",
    "Nguyễn",
    "O'Brien",
    "Øvergård",
    "Kowalski",
    "Dubois",
    "Rossi",
    "Yılmaz",
    "Pérez-López",
    "van der Berg",
    "佐藤",
    "王",
    "김",
    "العلي",
    "כהן",
)
_COMPANY_WORDS: tuple[str, ...] = (
    "Acme",
    "Globex",
    "Initech",
    "Société Générale des Données",
    "株式会社 山田",
    "شركة النور",
    "Ångström Labs",
    "Zeta & Co",
    "Rocket 🚀 Ventures",
    "Nordlys AS",
    "Umbrella",
    "Hooli",
)
_PLANS: tuple[str, ...] = ("free", "pro", "enterprise")
_DOMAINS: tuple[str, ...] = ("example.com", "example.org", "exemple.fr", "beispiel.de", "example.jp")
_KINDS: tuple[str, ...] = ("document", "video", "audio", "link", "note")
_KIND_WEIGHTS: tuple[int, ...] = (50, 10, 8, 17, 15)
_SOURCES: tuple[str, ...] = ("upload", "crawler", "api", "import", "email")
_LANGS: tuple[str, ...] = ("en", "fr", "de", "ja", "ar", "pt-BR", "zh-Hans")

_BASE_TIME = datetime(2023, 1, 1, tzinfo=UTC)
_SPAN_SECONDS = 2 * 365 * 86_400
_BASE_DATE = date(2022, 1, 1)


def random_uuid(rng: random.Random) -> uuid.UUID:
    """A version-4-shaped UUID drawn from ``rng`` (so it is reproducible, unlike ``uuid.uuid4``)."""
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def random_words(rng: random.Random, count: int) -> str:
    """``count`` words from a vocabulary mixing ASCII, accented, CJK, emoji, RTL and awkward tokens."""
    return " ".join(rng.choices(_VOCABULARY, k=count))


def random_title(rng: random.Random) -> str:
    """A short title (2–8 words), capitalised."""
    words = random_words(rng, rng.randint(2, 8))
    return words[:1].upper() + words[1:]


def random_text(rng: random.Random, min_words: int, max_words: int) -> str:
    """Prose of ``min_words``..``max_words`` words in sentences of 4–18 words, now and then split into
    paragraphs."""
    count = rng.randint(min_words, max_words)
    words = rng.choices(_VOCABULARY, k=count)
    start = 0
    while start < count:
        words[start] = words[start][:1].upper() + words[start][1:]
        end = min(count, start + rng.randint(4, 18))
        words[end - 1] += rng.choice(_SENTENCE_ENDS)
        start = end
    return " ".join(words).replace("\n\n ", "\n\n").rstrip("\n")


def random_long_text(rng: random.Random) -> str:
    """A body of 8.5k–20k characters (more than 8 kB, so PostgreSQL stores it with TOAST)."""
    target = rng.randint(LONG_BODY_MIN_CHARS, 20_000)
    paragraphs: list[str] = []
    size = 0
    while size < target:
        paragraph = random_text(rng, 80, 200)
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join(paragraphs)


def random_tags(rng: random.Random) -> list[str] | None:
    """NULL (10%), empty (10%) or 1–5 distinct tags."""
    draw = rng.random()
    if draw < 0.10:
        return None
    if draw < 0.20:
        return []
    return rng.sample(_TAGS, rng.randint(1, 5))


def random_metadata(rng: random.Random) -> dict[str, Any] | None:
    """NULL (15%), ``{}`` (5%) or a nested JSON object (objects, arrays, numbers, booleans, nulls)."""
    draw = rng.random()
    if draw < 0.15:
        return None
    if draw < 0.20:
        return {}
    return {
        "source": rng.choice(_SOURCES),
        "lang": rng.choice(_LANGS),
        "stats": {
            "views": rng.randint(0, 100_000),
            "rating": round(rng.random() * 5, 2),
            "bookmarked": rng.random() < 0.3,
        },
        "labels": rng.sample(_TAGS, rng.randint(0, 3)),
        "origin": {
            "system": rng.choice(("sharepoint", "drive", "s3", "notion", "wiki")),
            "ref": {"key": random_words(rng, 2), "path": [random_words(rng, 1) for _ in range(2)]},
        },
        "reviewer": None if rng.random() < 0.5 else rng.choice(_FIRST_NAMES),
    }


def random_embedding(rng: random.Random) -> list[float] | None:
    """NULL (10%) or 4–8 floats in [-2, 2], multiples of 1/1024 (exact in float32 and float64)."""
    if rng.random() < 0.10:
        return None
    return [rng.randint(-2048, 2048) / 1024 for _ in range(rng.randint(4, 8))]


def random_display_name(rng: random.Random) -> str | None:
    """A person's name (unicode-heavy) or NULL (10%)."""
    if rng.random() < 0.10:
        return None
    return f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"


def random_relevance(rng: random.Random) -> float:
    """A relevance score in [0, 1] with at most 6 decimals, including the bounds now and then."""
    draw = rng.random()
    if draw < 0.02:
        return 0.0
    if draw < 0.04:
        return 1.0
    return round(rng.random(), 6)


def token_count(rng: random.Random, text: str) -> int | None:
    """An approximate token count for ``text``, NULL 10% of the time."""
    if rng.random() < 0.10:
        return None
    return len(text.split()) * 4 // 3 + 1


def _slot(index: float, count: int) -> datetime:
    """The point ``index / count`` of the way through the two-year demo period."""
    return _BASE_TIME + timedelta(seconds=_SPAN_SECONDS * index / count)


def _jitter(rng: random.Random, max_seconds: float) -> timedelta:
    return timedelta(microseconds=rng.randrange(max(1, int(max_seconds * 1_000_000))))


def _updated(rng: random.Random, created: datetime) -> datetime:
    """``updated_at``: equal to ``created_at`` 60% of the time, later otherwise."""
    if rng.random() < 0.6:
        return created
    return created + _jitter(rng, 30 * 86_400)


# ------------------------------------------------------------------------------------------------------
# The plan: row counts and the ids children refer to
# ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a ``(scale, seed)`` generates, decided up front so each table streams independently.

    Entity ids are 0-based indexes into the id tuples; bigint ids are 1-based (content item ``i`` has id
    ``i + 1``).
    """

    scale: int
    seed: int
    tenant_ids: tuple[uuid.UUID, ...]
    user_ids: tuple[uuid.UUID, ...]
    user_tenants: tuple[int, ...]
    program_ids: tuple[uuid.UUID, ...]
    program_tenants: tuple[int, ...]
    project_ids: tuple[uuid.UUID, ...]
    project_tenants: tuple[int, ...]
    chunks_per_item: tuple[int, ...]
    thread_count: int
    messages_per_thread: tuple[int, ...]

    @property
    def content_count(self) -> int:
        return self.scale

    @property
    def chunk_count(self) -> int:
        return sum(self.chunks_per_item)

    @property
    def message_count(self) -> int:
        return sum(self.messages_per_thread)

    def rng(self, purpose: str) -> random.Random:
        """An independent, reproducible random stream for one table (or other purpose)."""
        return random.Random(f"pg2neo-demo:{self.seed}:{purpose}")


def _assign(rng: random.Random, count: int, groups: int) -> tuple[int, ...]:
    """Assign ``count`` members to ``groups``: the first ``groups`` round-robin, the rest at random."""
    return tuple(i if i < groups else rng.randrange(groups) for i in range(count))


def plan(scale: int, seed: int = 42) -> Plan:
    """Decide row counts and parent ids for ``scale`` content items (see the module docstring)."""
    if scale < 1:
        raise ValueError(f"scale must be at least 1, not {scale}")
    rng = random.Random(f"pg2neo-demo:{seed}:plan")
    tenants = max(2, scale // 500)
    users = max(2, scale // 5)
    programs = max(2, scale // 50)
    projects = max(2, scale // 10)
    threads = max(2, scale // 2)
    # 0..2*avg messages per thread, averaging 3 messages per content item overall.
    per_thread = max(1, round(2 * 3 * scale / threads))
    return Plan(
        scale=scale,
        seed=seed,
        tenant_ids=tuple(random_uuid(rng) for _ in range(tenants)),
        user_ids=tuple(random_uuid(rng) for _ in range(users)),
        user_tenants=_assign(rng, users, tenants),
        program_ids=tuple(random_uuid(rng) for _ in range(programs)),
        program_tenants=_assign(rng, programs, tenants),
        project_ids=tuple(random_uuid(rng) for _ in range(projects)),
        project_tenants=_assign(rng, projects, tenants),
        chunks_per_item=tuple(rng.randint(1, 7) for _ in range(scale)),
        thread_count=threads,
        # Thread 1 always has a message, so even scale=1 has every relationship kind.
        messages_per_thread=tuple(rng.randint(int(i == 0), per_thread) for i in range(threads)),
    )


def _null(rng: random.Random, index: int, rate: float) -> bool:
    """Whether a nullable column of a small table gets NULL: never for the row at index 0 and always for
    the one at index 1, so that even two-row tables have both, and at ``rate`` otherwise."""
    draw = rng.random()
    return index == 1 or (index != 0 and draw < rate)


def _group(members: Sequence[int], groups: int) -> list[list[int]]:
    grouped: list[list[int]] = [[] for _ in range(groups)]
    for member, group in enumerate(members):
        grouped[group].append(member)
    return grouped


# ------------------------------------------------------------------------------------------------------
# Row generators, one per table (pure: no database)
# ------------------------------------------------------------------------------------------------------


def tenant_rows(p: Plan) -> Iterator[Row]:
    rng = p.rng("tenants")
    for i, tenant_id in enumerate(p.tenant_ids):
        name = f"{rng.choice(_COMPANY_WORDS)} {i + 1}"
        plan_name = None if _null(rng, i, 0.2) else rng.choice(_PLANS)
        created = _slot(rng.random() * 0.05, 1)
        yield (tenant_id, name, plan_name, created, _updated(rng, created))


def user_rows(p: Plan) -> Iterator[Row]:
    rng = p.rng("users")
    for i, (user_id, tenant) in enumerate(zip(p.user_ids, p.user_tenants, strict=True)):
        display_name = random_display_name(rng)
        local = rng.choice(("user", "dev", "ops", "team", "jöhn", "ana.maria", "o'neil"))
        email = f"{local}.{i + 1}@{rng.choice(_DOMAINS)}"  # the index makes it unique
        created = _slot(i + rng.random(), len(p.user_ids)) - timedelta(days=30)
        yield (
            user_id,
            p.tenant_ids[tenant],
            email,
            display_name,
            rng.random() < 0.95,
            created,
            _updated(rng, created),
        )


def program_rows(p: Plan) -> Iterator[Row]:
    rng = p.rng("programs")
    for i, (program_id, tenant) in enumerate(zip(p.program_ids, p.program_tenants, strict=True)):
        description = None if _null(rng, i, 0.2) else random_text(rng, 5, 30)
        starts_on = None if _null(rng, i, 0.2) else _BASE_DATE + timedelta(days=rng.randint(0, 1200))
        created = _slot(i + rng.random(), len(p.program_ids))
        yield (
            program_id,
            p.tenant_ids[tenant],
            f"Program {i + 1}: {random_title(rng)}",
            description,
            starts_on,
            created,
            _updated(rng, created),
        )


def project_rows(p: Plan) -> Iterator[Row]:
    rng = p.rng("projects")
    programs_by_tenant = _group(p.program_tenants, len(p.tenant_ids))
    for i, (project_id, tenant) in enumerate(zip(p.project_ids, p.project_tenants, strict=True)):
        candidates = programs_by_tenant[tenant]
        program_id = None if _null(rng, i, 0.2) or not candidates else p.program_ids[rng.choice(candidates)]
        description = None if _null(rng, i, 0.25) else random_text(rng, 5, 40)
        budget = None if _null(rng, i, 0.2) else Decimal(rng.randint(0, 9_999_999_999)).scaleb(-2)
        created = _slot(i + rng.random(), len(p.project_ids))
        yield (
            project_id,
            p.tenant_ids[tenant],
            program_id,
            f"{random_title(rng)} #{i + 1}",
            description,
            budget,
            created,
            _updated(rng, created),
        )


def _is_long_content(item_id: int) -> bool:
    """Content item 1 and every 50th one after it get a long body (2%)."""
    return item_id % 50 == 1


def content_item_rows(p: Plan) -> Iterator[Row]:
    rng = p.rng("content_items")
    users_by_tenant = _group(p.user_tenants, len(p.tenant_ids))
    for item_id in range(1, p.content_count + 1):
        project = rng.randrange(len(p.project_ids))
        tenant = p.project_tenants[project]
        project_id = None if rng.random() < 0.15 else p.project_ids[project]
        author_id = None if rng.random() < 0.10 else p.user_ids[rng.choice(users_by_tenant[tenant])]
        if _is_long_content(item_id):
            body: str | None = random_long_text(rng)
        else:
            body = None if rng.random() < 0.05 else random_text(rng, 20, 120)
        description = None if rng.random() < 0.3 else random_text(rng, 5, 25)
        created = _slot(item_id - 1 + rng.random(), p.content_count)
        yield (
            item_id,
            random_uuid(rng),
            p.tenant_ids[tenant],
            project_id,
            author_id,
            rng.choices(_KINDS, _KIND_WEIGHTS)[0],
            random_title(rng),
            description,
            body,
            random_tags(rng),
            random_metadata(rng),
            created,
            _updated(rng, created),
        )


def content_chunk_rows(p: Plan) -> Iterator[Row]:
    rng = p.rng("content_chunks")
    chunk_id = 0
    for item_index, chunks in enumerate(p.chunks_per_item):
        item_id = item_index + 1
        created = _slot(item_id, p.content_count)  # never before the content item's created_at
        for chunk_index in range(chunks):
            chunk_id += 1
            text = random_text(rng, 10, 60)
            yield (
                chunk_id,
                random_uuid(rng),
                item_id,
                chunk_index,
                text,
                token_count(rng, text),
                random_embedding(rng),
                created,
                _updated(rng, created),
            )


def thread_rows(p: Plan) -> Iterator[Row]:
    rng = p.rng("threads")
    users_by_tenant = _group(p.user_tenants, len(p.tenant_ids))
    for thread_id in range(1, p.thread_count + 1):
        project = rng.randrange(len(p.project_ids))
        tenant = p.project_tenants[project]
        project_id = None if rng.random() < 0.3 else p.project_ids[project]
        parent = rng.randint(1, thread_id - 1) if thread_id > 1 and rng.random() < 0.2 else None
        created_by = None if rng.random() < 0.1 else p.user_ids[rng.choice(users_by_tenant[tenant])]
        title = None if rng.random() < 0.15 else random_title(rng)
        created = _slot(thread_id - 1 + rng.random(), p.thread_count)
        yield (
            thread_id,
            random_uuid(rng),
            p.tenant_ids[tenant],
            project_id,
            parent,
            created_by,
            title,
            created,
            _updated(rng, created),
        )


def message_rows(p: Plan) -> Iterator[Row]:
    rng = p.rng("messages")
    message_id = 0
    for thread_index, count in enumerate(p.messages_per_thread):
        thread_id = thread_index + 1
        at = _slot(thread_id, p.thread_count)  # never before the thread's created_at
        roles = ["system"] if count and rng.random() < 0.1 else []
        while len(roles) < count:
            roles.append("user" if len(roles) % 2 == 0 else "assistant")
        for role in roles:
            message_id += 1
            at += _jitter(rng, 3_600)
            if rng.random() < 0.02:
                body = random_long_text(rng)
            elif role == "assistant":
                body = random_text(rng, 10, 80)
            else:
                body = random_text(rng, 2, 30)
            author_id = None
            if role == "user" and rng.random() >= 0.1:
                author_id = rng.choice(p.user_ids)
            yield (
                message_id,
                random_uuid(rng),
                thread_id,
                author_id,
                role,
                body,
                token_count(rng, body),
                at,
                _updated(rng, at),
            )


def thread_content_rows(p: Plan) -> Iterator[Row]:
    rng = p.rng("thread_content")
    threads = range(1, p.thread_count + 1)
    for item_id in range(1, p.content_count + 1):
        links = max(int(item_id == 1), rng.choice((0, 1, 1, 2)))
        for thread_id in rng.sample(threads, links):
            added = max(_slot(item_id, p.content_count), _slot(thread_id, p.thread_count))
            yield (thread_id, item_id, random_relevance(rng), added + _jitter(rng, 86_400))


def message_context_rows(p: Plan) -> Iterator[Row]:
    rng = p.rng("message_context")
    chunks = range(1, p.chunk_count + 1)
    for message_id in range(1, p.message_count + 1):
        picks = min(len(chunks), max(int(message_id == 1), rng.choice((0, 0, 0, 1, 1, 2))))
        for rank, chunk_id in enumerate(rng.sample(chunks, picks), start=1):
            yield (message_id, chunk_id, rank)


_ROW_GENERATORS = {
    "tenants": tenant_rows,
    "users": user_rows,
    "programs": program_rows,
    "projects": project_rows,
    "content_items": content_item_rows,
    "content_chunks": content_chunk_rows,
    "threads": thread_rows,
    "messages": message_rows,
    "thread_content": thread_content_rows,
    "message_context": message_context_rows,
}


def iter_rows(p: Plan, table: str) -> Iterator[Row]:
    """The rows of ``table`` for plan ``p``, as tuples in ``COLUMNS[table]`` order."""
    try:
        generator = _ROW_GENERATORS[table]
    except KeyError:
        raise ValueError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}") from None
    return generator(p)


# ------------------------------------------------------------------------------------------------------
# Database side
# ------------------------------------------------------------------------------------------------------


def load_schema(conn: psycopg.Connection[Any]) -> None:
    """Drop the reference tables, types and trigger function if present, then create them from
    ``SCHEMA_SQL``; re-runnable. Commits, unless a transaction was already open on ``conn`` (the work
    then joins it and the caller commits)."""
    drop_tables = sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(
        sql.SQL(", ").join(sql.Identifier(t) for t in reversed(TABLES))
    )
    drop_types = sql.SQL("DROP TYPE IF EXISTS {} CASCADE").format(sql.SQL(", ").join(sql.Identifier(t) for t in _TYPES))
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(drop_tables)
        cur.execute(drop_types)
        cur.execute("DROP FUNCTION IF EXISTS bump_version() CASCADE")
        cur.execute(SCHEMA_SQL.encode())


def _copy_table(cur: psycopg.Cursor[Any], table: str, rows: Iterator[Row]) -> int:
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS[table])
    )
    json_columns = [i for i, column in enumerate(COLUMNS[table]) if column == "metadata"]
    count = 0
    with cur.copy(statement) as copy:
        for row in rows:
            if json_columns:
                values = list(row)
                for i in json_columns:
                    if values[i] is not None:
                        values[i] = Jsonb(values[i])
                copy.write_row(values)
            else:
                copy.write_row(row)
            count += 1
    return count


def generate(conn: psycopg.Connection[Any], scale: int, seed: int = 42) -> dict[str, int]:
    """Fill the (empty) reference tables with the deterministic demo data for ``(scale, seed)``.

    Loads with COPY in one transaction, advances the identity sequences past the generated ids so
    ordinary inserts keep working, and ANALYZEs the tables. Returns the rows loaded per table, in
    ``TABLES`` order. Commits, unless a transaction was already open on ``conn`` (the work then joins it
    and the caller commits). Raises ``ValueError`` if a table already has rows.
    """
    p = plan(scale, seed)
    counts: dict[str, int] = {}
    with conn.transaction(), conn.cursor() as cur:
        for table in TABLES:
            cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table)))
            row = cur.fetchone()
            if row is not None and row[0]:
                raise ValueError(f"table {table} is not empty; run load_schema() first")
        for table in TABLES:
            counts[table] = _copy_table(cur, table, iter_rows(p, table))
        for table in IDENTITY_TABLES:
            cur.execute(
                sql.SQL(
                    "SELECT setval(pg_get_serial_sequence(%s, 'id'), coalesce(max(id), 1), max(id) IS NOT NULL) FROM {}"
                ).format(sql.Identifier(table)),
                (table,),
            )
        cur.execute(sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(sql.Identifier(t) for t in TABLES)))
    return counts


def row_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Exact ``count(*)`` of every reference table, in ``TABLES`` order, from a single snapshot."""
    query = sql.SQL("SELECT {}").format(
        sql.SQL(", ").join(sql.SQL("(SELECT count(*) FROM {})").format(sql.Identifier(t)) for t in TABLES)
    )
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(query)
        row = cur.fetchone()
    if row is None:  # pragma: no cover - a SELECT without FROM always returns one row
        raise RuntimeError("row count query returned no row")
    return {table: int(count) for table, count in zip(TABLES, row, strict=True)}
