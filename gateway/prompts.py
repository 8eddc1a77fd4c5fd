"""Prompt templates: the versions the operator keeps (in the files ``prompt_files`` names, and in the store,
managed under the admin key), and their expansion into a create's body, before it is routed.

A create's ``prompt: {"id", "version", "variables"}`` names a template. Its instructions go before the
request's own (joined by a blank line, as the API puts the prompt's first), its input messages before the
request's input, with ``{{name}}`` filled in from the request's variables, else the template's defaults. A
variable that is a content part (input_text, input_image, input_file) stands for a placeholder that is a
whole text part; a string, or an input_text's text, fills placeholders in any text. Ids the gateway does not
hold are left for providers that keep prompts themselves (``stored_prompts`` in the catalogue).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import tomllib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .config import SettingsError, SettingsErrors
from .errors import InvalidRequest, NotFound
from .schemas import validate
from .schemas.prompts import PromptFileEntrySchema

if TYPE_CHECKING:
    from .providers import Provider
    from .store.prompts import PromptStore, StoredPrompt

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_VERSION = re.compile(r"[1-9][0-9]{0,8}")
# Content parts whose text is filled in (and which a part variable may replace whole).
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
_file_schema = PromptFileEntrySchema()


@dataclasses.dataclass(frozen=True)
class Template:
    """One version of a prompt template, from a file or the store."""

    id: str
    version: int
    instructions: str | None
    input: list[dict]  # messages, ``{"role", "content"}``
    variables: dict  # the defaults, by name
    created_at: float
    file: str | None = None  # the prompt file it comes from; None: the store
    used: tuple[str, ...] = ()  # the variables its text names, in order of first use

    def as_object(self) -> dict:
        """The prompt object of the admin endpoints."""
        return {
            "id": self.id,
            "object": "prompt",
            "version": str(self.version),
            "created_at": int(self.created_at),
            "instructions": self.instructions,
            "input": self.input,
            "variables": self.variables,
            "source": "store" if self.file is None else "file",
        }


def template_body(data: Mapping[str, Any]) -> dict:
    """A validated template body as it is kept: input as a list of messages, variables as a table."""
    given = data.get("input")
    return {
        "instructions": data.get("instructions") or None,
        "input": [{"role": "user", "content": given}] if isinstance(given, str) else list(given or []),
        "variables": dict(data.get("variables") or {}),
    }


def _template(prompt_id: str, version: int, body: dict, created_at: float, file: str | None = None) -> Template:
    texts = [body["instructions"] or "", *(text for message in body["input"] for text in _texts(message))]
    used = dict.fromkeys(name for text in texts for name in PLACEHOLDER.findall(text))
    return Template(
        prompt_id, version, body["instructions"], body["input"], body["variables"], created_at, file, tuple(used)
    )


def _stored(prompt: StoredPrompt) -> Template:
    return _template(prompt.id, prompt.version, prompt.body, prompt.created_at)


def _texts(message: dict) -> Iterator[str]:
    content = message.get("content")
    if isinstance(content, str):
        yield content
        return
    for part in content or ():
        if part.get("type") in _TEXT_PARTS and isinstance(part.get("text"), str):
            yield part["text"]


# ---------------------------------------------------------------------------------------------- prompt files
def load_files(paths: list[str]) -> dict[str, dict[int, Template]]:
    """The templates of every prompt file, by id then version.

    A file is TOML, or JSON when its name ends in ``.json``; either holds ``prompts``, a list of entries with
    ``id``, ``version`` (default 1), ``instructions``, ``input`` and ``variables`` (the defaults): each entry is
    one version. Raises SettingsErrors, one per file at fault, each naming the file and the entry.
    """
    found: dict[str, dict[int, Template]] = {}
    errors: list[SettingsError] = []
    for path in paths:
        try:
            for template in _read(path):
                versions = found.setdefault(template.id, {})
                if template.version in versions:
                    raise _file_error(
                        path,
                        f"prompt '{template.id}' version {template.version} is defined twice "
                        f"(also in {versions[template.version].file})",
                    )
                versions[template.version] = template
        except SettingsError as err:
            errors.append(err)
    if errors:
        raise SettingsErrors(errors)
    return found


def _file_error(path: str, message: str) -> SettingsError:
    return SettingsError(f"{path}: {message}", key="prompt_files")


def _read(path: str) -> list[Template]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        mtime = os.path.getmtime(path)
    except OSError as exc:
        raise _file_error(path, f"cannot read the prompt file: {exc.strerror}") from None
    try:
        data = json.loads(raw) if path.endswith(".json") else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise _file_error(path, f"not valid {'JSON' if path.endswith('.json') else 'TOML'}: {exc}") from None
    if not isinstance(data, dict) or set(data) - {"prompts"} or not isinstance(data.get("prompts"), list):
        raise _file_error(path, "must hold `prompts`, a list of prompt entries ([[prompts]] in TOML), and nothing else")
    templates = []
    for i, entry in enumerate(data["prompts"]):
        try:
            if not isinstance(entry, dict):
                raise InvalidRequest("expected a table (an entry with id, instructions, input, variables).")
            checked = validate(_file_schema, entry)
        except InvalidRequest as err:
            raise _file_error(path, f"prompts[{i}]: {err.message}") from None
        templates.append(_template(checked["id"], int(checked["version"]), template_body(checked), mtime, path))
    return templates


# ---------------------------------------------------------------------------------------------- the library
def prompt_not_found(prompt_id: str) -> NotFound:
    return NotFound(f"Prompt with id '{prompt_id}' not found.")


class PromptLibrary:
    """Every template the gateway holds: the prompt files' (read-only) and the store's, one namespace of ids."""

    def __init__(self, files: Mapping[str, dict[int, Template]], store: PromptStore):
        self._files = dict(files)
        self._store = store

    # ------------------------------------------------------------------ the admin endpoints
    def create(self, body: dict) -> dict:
        """A new prompt from a validated template body: version 1 of a new id."""
        prompt_id = "pmpt_" + secrets.token_hex(24)
        return _stored(self._store.create(prompt_id, template_body(body))).as_object()

    def add_version(self, prompt_id: str, body: dict) -> dict:
        """The prompt's next version. Raises NotFound, and InvalidRequest for a prompt of a file."""
        self._writable(prompt_id)
        added = self._store.add_version(prompt_id, template_body(body))
        if added is None:
            raise prompt_not_found(prompt_id)
        return _stored(added).as_object()

    def get(self, prompt_id: str, version: str | None = None) -> dict:
        """A version of a prompt (the latest when ``version`` is None). Raises NotFound."""
        template = self.find(prompt_id, version, param="version")
        if template is None:
            raise prompt_not_found(prompt_id)
        return template.as_object()

    def page(self, *, after: str | None = None, limit: int = 20) -> dict:
        """A list page of the latest version of each prompt, by id: the files' and the store's together."""
        merged = {p.id: _stored(p) for p in self._store.latest(after=after, limit=limit + 1)}
        for prompt_id, versions in self._files.items():  # a file's prompt hides a stored one of the same id
            if after is None or prompt_id > after:
                merged[prompt_id] = versions[max(versions)]
        ordered = [merged[k] for k in sorted(merged)]
        data = [t.as_object() for t in ordered[:limit]]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(ordered) > limit,
        }

    def delete(self, prompt_id: str) -> dict:
        """Remove a prompt with every version. Raises NotFound, and InvalidRequest for a prompt of a file."""
        self._writable(prompt_id)
        if not self._store.delete(prompt_id):
            raise prompt_not_found(prompt_id)
        return {"id": prompt_id, "object": "prompt.deleted", "deleted": True}

    def _writable(self, prompt_id: str) -> None:
        versions = self._files.get(prompt_id)
        if versions is not None:
            path = versions[max(versions)].file
            raise InvalidRequest(
                f"Prompt '{prompt_id}' comes from the prompt file {path} (the gateway's prompt_files setting) and "
                "cannot be changed through the API: edit the file, then reload the gateway (SIGHUP).",
                param="prompt_id",
                code="prompt_in_file",
            )

    # ------------------------------------------------------------------ expansion
    def find(self, prompt_id: str, version: str | None, param: str = "prompt.version") -> Template | None:
        """The template of ``prompt_id`` at ``version`` (the latest when None); None when the gateway holds
        no prompt of that id. Raises NotFound for a version it does not have (``param`` names it).
        """
        number = int(version) if version is not None and _VERSION.fullmatch(version) else None
        versions = self._files.get(prompt_id)
        if versions is not None:
            latest = max(versions)
            template = versions[latest] if version is None else versions.get(number or 0)
        else:
            stored, latest = self._store.get(prompt_id, None if version is None else number or 0)
            if latest is None:
                return None
            template = None if stored is None else _stored(stored)
        if template is None:
            raise NotFound(f"Prompt '{prompt_id}' has no version '{version}' (its latest is '{latest}').", param=param)
        return template

    def expand(self, body: dict) -> dict:
        """``body`` with its ``prompt`` expanded and taken out; ``body`` itself when there is none, or when the
        gateway does not hold its id (see ``check_target``). Raises InvalidRequest for a missing variable, a
        part variable inside text, and a version the gateway's prompt does not have.
        """
        prompt = body["prompt"]
        if prompt is None:
            return body
        try:
            template = self.find(prompt["id"], prompt.get("version"))
        except NotFound as err:  # in a create, a version that does not exist is a bad parameter
            raise InvalidRequest(err.message, param=err.param, code="prompt_not_found") from None
        if template is None:
            return body
        return fill(template, body)


def check_target(prompt: dict, provider: Provider) -> None:
    """A prompt the gateway does not hold goes only to a provider that keeps prompts of its own; raises
    InvalidRequest (400 ``prompt_not_found``) for any other.
    """
    if not provider.stored_prompts:
        raise InvalidRequest(
            f"Prompt with id '{prompt['id']}' not found: the gateway holds no such prompt template, and the "
            f"provider '{provider.name}' keeps none of its own.",
            param="prompt.id",
            code="prompt_not_found",
        )


def refused_everywhere(prompt: dict, providers: list[Provider]) -> None:
    """Raises the first target's 400 when none of ``providers`` keeps prompts of its own (see check_target)."""
    if not any(provider.stored_prompts for provider in providers):
        check_target(prompt, providers[0])


# ---------------------------------------------------------------------------------------------- filling in
def fill(template: Template, body: dict) -> dict:
    """The request ``body`` with ``template`` put before its instructions and input, variables filled in."""
    prompt = body["prompt"]
    values = {**template.variables, **(prompt.get("variables") or {})}
    for name in template.used:
        if name not in values:
            raise InvalidRequest(
                f"Missing prompt variable '{name}': prompt '{template.id}' version '{template.version}' uses "
                f"{{{{{name}}}}} and has no default for it.",
                param=f"prompt.variables.{name}",
                code="missing_required_parameter",
            )
    out = {k: v for k, v in body.items() if k != "prompt"}
    if template.instructions:
        instructions = _fill(template.instructions, values)
        own = body.get("instructions")
        out["instructions"] = f"{instructions}\n\n{own}" if own else instructions
    if template.input:
        messages = [_message(message, values) for message in template.input]
        own = body.get("input")
        if own is None:
            out["input"] = messages
        elif isinstance(own, str):
            out["input"] = [*messages, {"role": "user", "content": own}]
        else:
            out["input"] = [*messages, *own]
    return out


def _fill(text: str, values: dict) -> str:
    """``text`` with every placeholder replaced by its string (an input_text part: its text)."""

    def value(match: re.Match) -> str:
        name = match.group(1)
        given = values[name]
        if isinstance(given, str):
            return given
        if given.get("type") == "input_text":
            return given["text"]
        raise InvalidRequest(
            f"Prompt variable '{name}' is an {given.get('type')} part: it can stand only for a placeholder that "
            "is a whole text part of an input message, not for one inside text.",
            param=f"prompt.variables.{name}",
        )

    return PLACEHOLDER.sub(value, text)


def _whole(text: str, values: dict) -> dict | None:
    """The part variable ``text`` is nothing but the placeholder of, or None."""
    match = PLACEHOLDER.fullmatch(text.strip())
    if match is None:
        return None
    given = values[match.group(1)]
    return given if isinstance(given, dict) else None


def _message(message: dict, values: dict) -> dict:
    content = message.get("content")
    if isinstance(content, str):
        part = _whole(content, values)
        return {**message, "content": [part] if part is not None else _fill(content, values)}
    parts = []
    for part in content or ():
        if part.get("type") in _TEXT_PARTS and isinstance(part.get("text"), str):
            whole = _whole(part["text"], values)
            parts.append(whole if whole is not None else {**part, "text": _fill(part["text"], values)})
        else:
            parts.append(part)
    return {**message, "content": parts}
