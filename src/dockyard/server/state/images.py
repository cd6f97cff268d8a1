"""Who may use which image: images under a user's namespace are that user's.

dockyard's builds tag every image ``<owner>/<name>:<tag>`` on the nodes, so a
reference whose namespace (:func:`dockyard.core.image_ref.namespace`) is a
user's name is that user's private build. Other users may not run it, build
``FROM`` it, or see its name in the node listing; admins may.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from sqlalchemy import String, cast, exists, select
from sqlalchemy.orm import Session

from dockyard.core.image_ref import dockerfile_images, namespace, tagged
from dockyard.core.security import ContainerPolicy, PolicyViolation, check_image
from dockyard.server.state.auth import Principal
from dockyard.store.tables import Node, User

RULE = "image_namespace"


def user_namespaces(session: Session, names: Iterable[str]) -> set[str]:
    """Which of ``names`` are users' names (one indexed query)."""
    wanted = sorted(set(names))
    if not wanted:
        return set()
    return set(session.scalars(select(User.name).where(User.name.in_(wanted))))


def own_image(
    session: Session,
    who: Principal,
    ref: str,
    built: Callable[[str, str], bool] | None = None,
) -> str:
    """The caller's namespace first, as a build tags images: ``tools:v1`` is
    ``<caller>/tools:v1`` when a node reported having that image (the caller's
    ``dockyard build -t tools:v1``) or ``built(user id, image)`` says this server
    just built it (nodes report images every few seconds), else ``ref`` unchanged.
    A reference with a ``/`` or a digest is never rewritten (no query for those)."""
    if "/" in ref or "@" in ref or not ref:
        return ref
    mine = f"{who.name}/{tagged(ref)}"
    if built is not None and built(who.user_id, mine):
        return mine
    # The images column is a JSON list of strings: its text holds '"NAME"' exactly.
    found = session.scalar(
        select(exists().where(cast(Node.images, String).contains(f'"{mine}"', autoescape=True)))
    )
    return mine if found else ref


def check_images(session: Session, who: Principal, refs: Sequence[tuple[str, str]]) -> None:
    """Refuse (PolicyViolation, a 403 naming the field) any ``(field, reference)`` in
    another user's namespace. Admins may use every image."""
    if who.is_admin:
        return
    foreign = {
        ns: (field, ref)
        for field, ref in refs
        if (ns := namespace(ref)) is not None and ns != who.name
    }
    for ns in sorted(user_namespaces(session, foreign)):
        field, ref = foreign[ns]
        raise PolicyViolation(
            field, RULE, f"{ref} is {ns}'s image: images under {ns}/ are usable by {ns} only"
        )


def check_dockerfile(
    session: Session, who: Principal, text: str, policy: ContainerPolicy | None = None
) -> None:
    """Refuse a build whose Dockerfile reads another user's image (``FROM``,
    ``COPY --from``, ``RUN --mount=from=``), an image it cannot resolve (a ``$``
    left after the ``ARG`` defaults), or one from a registry ``policy`` does not
    allow (rule ``registry``: the nodes' Engines would fetch it)."""
    if who.is_admin:
        return
    refs = dockerfile_images(text)
    for ref in refs:
        if "$" in ref:
            raise PolicyViolation(
                "dockerfile",
                RULE,
                f"cannot tell which image {ref!r} is: give the image by name or an ARG default",
            )
    if policy is not None:
        for ref in refs:
            check_image(ref, policy, "dockerfile")
    check_images(session, who, [("dockerfile", ref) for ref in refs])


def visible_images(images: Iterable[str], who: Principal, users: set[str]) -> list[str]:
    """The image names of a node ``who`` may see: all for admins; for users, their own
    and those under no user's namespace (``users``: every user namespace in play)."""
    if who.is_admin:
        return list(images)
    return [i for i in images if (ns := namespace(i)) is None or ns == who.name or ns not in users]
