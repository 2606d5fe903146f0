"""What a survey returns (`Node.survey`): the members' answers and how many members the
cluster's tree knew of, so a caller tells "every member answered" from "the deadline came
first" (see `iris.core.survey`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SurveyResult:
    """`answers`: member node id -> its answer, one per member that answered in time.
    `members_known`: members the cluster's tree knew of when asked, answered or not (a member
    that failed, gave no answer, or answered too late counts as not answered; a dead
    subtree counts with the capacity it last reported). `complete`: every member it knew of
    answered."""

    answers: dict[int, bytes] = field(default_factory=dict)
    members_known: int = 0

    @property
    def complete(self) -> bool:
        return len(self.answers) >= self.members_known

    @property
    def missing(self) -> int:
        """Members known that did not answer."""
        return max(0, self.members_known - len(self.answers))
