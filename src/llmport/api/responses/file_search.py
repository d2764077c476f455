"""The Responses API's ``file_search`` tool, over the gateway's own vector stores.

The gateway searches before the model answers: the turn's user text is the query, the
caller's stores named by the tool are searched as ``/v1/vector_stores/{id}/search`` does
(the query embedded through the gateway as the caller), and the best excerpts go to the
model as a system message before the turn. The response then begins with a
``file_search_call`` item (its ``results`` only when ``include`` asks for
``file_search_call.results``), as OpenAI's does. One search a turn, whatever the model
would have chosen: any chat model can answer from it, with or without tool calling.

The model is asked to name the files it draws on; each place its answer names one of the
files the search found becomes a ``file_citation`` annotation of the answer's text (its
``index`` where the name begins, in characters), as OpenAI's answers carry them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llmport.api.jobs.caller import owner_of
from llmport.api.jobs.vector_shapes import searchable
from llmport.db.rag import RagTables
from llmport.errors import InvalidRequestError, NotFoundError
from llmport.gateway.gateway import Gateway
from llmport.rag.embeddings import EmbeddingFailed, embed, embedding_error
from llmport.rag.filters import Predicate, compile_filter
from llmport.rag.index import Hit, SearchIndex
from llmport.rag.settings import RagConfig
from llmport.translation.chat_to_responses import new_id
from llmport.types import Principal

TOOL_FIELDS = {"type", "vector_store_ids", "max_num_results", "ranking_options", "filters"}
RESULTS = "file_search_call.results"  # the ``include`` value that shows the results
EXCERPT_CHARS = 4000  # of each excerpt given to the model


@dataclass(slots=True)
class SearchTool:
    """A request's checked ``file_search`` tool."""

    store_ids: list[str]
    limit: int
    threshold: float
    accept: Predicate | None


def checked_tool(tool: dict[str, Any], where: str) -> SearchTool:
    """The tool's settings; 400 naming the field (``tools.N.field``) that is wrong."""
    unknown = sorted(tool.keys() - TOOL_FIELDS)
    if unknown:
        raise InvalidRequestError(f"Unsupported parameter: {where}.{unknown[0]}.",
                                  param=f"{where}.{unknown[0]}", code="unsupported_parameter")
    ids = tool.get("vector_store_ids")
    if not (isinstance(ids, list) and 1 <= len(ids) <= 10
            and all(isinstance(i, str) and i for i in ids)):
        raise InvalidRequestError(f"{where}.vector_store_ids must list 1 to 10 vector store "
                                  "ids.", param=f"{where}.vector_store_ids")
    limit = tool.get("max_num_results", 10)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 50:
        raise InvalidRequestError(f"{where}.max_num_results must be an integer from 1 to 50.",
                                  param=f"{where}.max_num_results")
    ranking = tool.get("ranking_options") or {}
    threshold = ranking.get("score_threshold", 0) if isinstance(ranking, dict) else None
    if not isinstance(threshold, int | float) or isinstance(threshold, bool) \
            or not 0 <= threshold <= 1:
        raise InvalidRequestError(f"{where}.ranking_options.score_threshold must be from 0 "
                                  "to 1.", param=f"{where}.ranking_options")
    try:
        accept = compile_filter(tool["filters"]) if tool.get("filters") is not None else None
    except InvalidRequestError as exc:
        raise InvalidRequestError(exc.message, param=f"{where}.filters") from None
    return SearchTool(list(dict.fromkeys(ids)), limit, float(threshold), accept)


def query_of(messages: list[dict[str, Any]]) -> str | None:
    """The text of the turn's last user message (None: the turn has none to search with)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(part.get("text", "") for part in content
                               if isinstance(part, dict) and part.get("type") == "text")
        return (content.strip() or None) if isinstance(content, str) else None
    return None


class FileSearch:
    def __init__(self, gateway: Gateway, tables: RagTables, index: SearchIndex,
                 config: RagConfig) -> None:
        self.gateway = gateway
        self.tables = tables
        self.index = index
        self.config = config

    async def run(self, principal: Principal, tool: SearchTool, query: str) -> list[Hit]:
        """The best chunks of the caller's stores for ``query``: 404 for a store that is not
        theirs; an embedding failure as its own kind of error (402, 429, 502…)."""
        owner = owner_of(principal)
        stores = []
        for store_id in tool.store_ids:
            store = await self.tables.get_store(owner, store_id)
            if store is None:
                raise NotFoundError(f"No such vector store: {store_id}",
                                    param="tools.vector_store_ids",
                                    code="vector_store_not_found")
            await searchable(self.tables, store)  # not expired: before the query is embedded
            stores.append(store)
        vectors: dict[str, Any] = {}  # one embedding per model the stores use
        hits: list[Hit] = []
        for store in stores:
            model = store.embedding_model
            if model not in vectors:
                try:
                    vectors[model] = await embed(self.gateway, model, [query], principal,
                                                 self.config.embed_batch)
                except EmbeddingFailed as exc:
                    raise embedding_error(exc) from None
            hits += await self.index.search(store.id, vectors[model], tool.limit,
                                            tool.threshold, tool.accept)
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits[:tool.limit]


def excerpts_message(hits: list[Hit]) -> dict[str, Any]:
    """The system message that hands the model what the search found."""
    if not hits:
        text = ("A search of the user's files (file_search) found nothing relevant to their "
                "message. Say so if the answer would have to come from those files.")
    else:
        parts = [f'<excerpt file="{hit.filename}" file_id="{hit.file_id}" '
                 f'score="{hit.score:.3f}">\n{hit.text[:EXCERPT_CHARS]}\n</excerpt>'
                 for hit in hits]
        text = ("Excerpts from the user's files, found by searching them for the user's "
                "message (file_search). Answer from them where they are relevant, and name "
                "the file you draw on.\n\n" + "\n\n".join(parts))
    return {"role": "system", "content": text}


def call_item(query: str, hits: list[Hit], with_results: bool,
              status: str = "completed") -> dict[str, Any]:
    """The response's ``file_search_call`` output item."""
    return {"id": new_id("fs"), "type": "file_search_call", "status": status,
            "queries": [query], "results": [
                {"file_id": hit.file_id, "filename": hit.filename, "score": hit.score,
                 "text": hit.text, "attributes": hit.attributes} for hit in hits]
            if with_results else None}


def found_files(hits: list[Hit]) -> list[tuple[str, str]]:
    """The files the search found, each once: (file id, filename), best first."""
    return list(dict.fromkeys((hit.file_id, hit.filename) for hit in hits))


class Citations:
    """The places an answer names the files a search found, as ``file_citation`` annotations
    (``index``: where the name begins, in characters), in order.

    A name counts as a whole word (not inside a longer name: ``a.md`` in ``data.md`` or
    ``a.md.bak``; a full stop after it ends a sentence); where two found files' names
    overlap, the longer wins; two files with one name are cited as the first (the better
    hit). ``of(text)`` cites a whole text; a stream's growing text is fed piece by piece
    (``start``, ``feed``, ``rest``), each citation given as soon as no later text can
    change it, so they go out as the answer is written.
    """

    def __init__(self, files: list[tuple[str, str]]) -> None:
        self._by_name: dict[str, str] = {}
        for file_id, filename in files:
            self._by_name.setdefault(filename, file_id)
        names = sorted(self._by_name, key=len, reverse=True)  # the longer first
        alternatives = "|".join(map(re.escape, names))
        self._pattern = re.compile(r"(?<![\w.\-])(?:" + alternatives + r")(?!\.?[\w\-])") \
            if names else None
        # What a match attempt at a position reads: the longest name and the two characters
        # after it. Once the text runs that far past a position, its outcome is final.
        self._reach = (len(names[0]) if names else 0) + 2
        self._from = 0  # the text before it is cited and will not change
        # The text from ``_kept`` on: what is cited is dropped, but for the character the
        # next match's lookbehind reads, so a long answer is not copied again and again.
        self._text = ""
        self._kept = 0

    def of(self, text: str) -> list[dict[str, Any]]:
        """The citations of a whole text (a text fed before is forgotten)."""
        self.start()
        self._text = text
        return self._scan(final=True)

    def start(self) -> None:
        """A new message's text begins."""
        self._text, self._from, self._kept = "", 0, 0

    def feed(self, piece: str) -> list[dict[str, Any]]:
        """The citations that ``piece`` (the next of the text) makes final."""
        self._text += piece
        return self._scan(final=False)

    def rest(self) -> list[dict[str, Any]]:
        """The citations not yet given, once the text is whole."""
        return self._scan(final=True)

    def _scan(self, final: bool) -> list[dict[str, Any]]:
        if self._pattern is None:
            return []
        text, kept = self._text, self._kept
        end = kept + len(text)
        decided = end if final else end - self._reach  # no later text changes what is before
        found: list[dict[str, Any]] = []
        for match in self._pattern.finditer(text, self._from - kept):
            if kept + match.start() > decided:  # a longer name, or what follows, could change it
                break
            found.append(self._citation(match, kept))
            self._from = kept + match.end()
        self._from = max(self._from, decided)
        drop = max(0, self._from - 1 - kept)
        self._text, self._kept = text[drop:], kept + drop
        return found

    def _citation(self, match: re.Match[str], offset: int) -> dict[str, Any]:
        return {"type": "file_citation", "file_id": self._by_name[match.group()],
                "filename": match.group(), "index": offset + match.start()}
