"""Every default prompt in one reviewed place.

Protocols take their prompts from here (or from their config, which defaults to these), never
from strings scattered through the code. Answer-format instructions depend on the task's
verifier kind.
"""

from __future__ import annotations

# The user turn for a question, by verifier kind. SmolLM2-135M is very sensitive to this wording;
# measured greedy on 128 arithmetic *dev* items (1-digit +/-), never on test (docs/foundation.md):
#   "{q}\nEnd your reply with a line of the form 'Answer: <number>'."            49%, 14 format failures
#   "Solve this problem: {q}\nEnd your reply with ..."                          38%
#   "Solve this arithmetic problem: {q}\nEnd your reply with ..."               64%, 0 format failures
QUESTION_TEMPLATES = {
    "numeric": "Solve this arithmetic problem: {question}\nEnd your reply with a line of the form 'Answer: <number>'.",
}


def question_prompt(question: str, verifier: str) -> str:
    """The user turn an agent sees for a task: the question and how to format the answer."""
    return QUESTION_TEMPLATES[verifier].format(question=question)


def question_messages(question: str, verifier: str) -> list[dict[str, str]]:
    """The chat turns an agent answering a task on its own receives."""
    return [{"role": "user", "content": question_prompt(question, verifier)}]
