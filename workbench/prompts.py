"""Every default prompt in one reviewed place.

Protocols take their prompts from here (or from their config, which defaults to these), never
from strings scattered through the code. Answer-format instructions depend on the task's
verifier kind.
"""

from __future__ import annotations

from dataclasses import dataclass

# The user turn for a question, by verifier kind. SmolLM2-135M is very sensitive to this wording;
# measured greedy on 128 arithmetic *dev* items (1-digit +/-), never on test (docs/foundation.md):
#   "{q}\nEnd your reply with a line of the form 'Answer: <number>'."            49%, 14 format failures
#   "Solve this problem: {q}\nEnd your reply with ..."                          38%
#   "Solve this arithmetic problem: {q}\nEnd your reply with ..."               64%, 0 format failures
# choice/exact: 135 BBH dev items (85 choice, 50 exact); math: 86 MATH-500 dev items (docs/tasks.md).
QUESTION_TEMPLATES = {
    "numeric": "Solve this arithmetic problem: {question}\nEnd your reply with a line of the form 'Answer: <number>'.",
    "math": "Solve this math problem: {question}\nPut your final answer in \\boxed{{}}.",
    "choice": "{question}\nChoose one of the options. End your reply with a line of the form 'Answer: (<letter>)'.",
    "exact": "Answer this question: {question}\nEnd your reply with a line of the form 'Answer: <answer>'.",
    "code": "{question}\n\nWrite the complete Python code in one ```python code block.",
}


def question_prompt(question: str, verifier: str) -> str:
    """The user turn an agent sees for a task: the question and how to format the answer."""
    return QUESTION_TEMPLATES[verifier].format(question=question)


def question_messages(question: str, verifier: str) -> list[dict[str, str]]:
    """The chat turns an agent answering a task on its own receives."""
    return [{"role": "user", "content": question_prompt(question, verifier)}]


# ---------------------------------------------------------------------------------------------
# Role prompts of the collaboration protocols. Each builds one user turn; the context (other
# agents' answers, a slate, a plan) comes first and the question with its answer-format line
# comes last, because small models follow the instruction nearest the end.
# ---------------------------------------------------------------------------------------------


def numbered(texts: list[str], label: str = "Agent", start: int = 1) -> str:
    """'[Agent 1]\\n...\\n\\n[Agent 2]\\n...': other agents' outputs, kept apart and labelled."""
    return "\n\n".join(f"[{label} {i}]\n{t.strip()}" for i, t in enumerate(texts, start))


def shared_text(text: str, extracted: str | None, share: str) -> str:
    """What another agent gets to see of a message: the full text, or only its answer."""
    if share == "full":
        return text
    return f"Answer: {extracted}" if extracted is not None else "(no answer)"


# ---- the synthesising roles' episode state: one prompt builder per role reads it ----
# Maestro's central agent (maestro.central_turns), the leader (leader.leader_turns) and the MoA
# aggregator (moa.aggregator_turns) each have ONE builder, registered with their protocol
# (``PROTOCOLS[name].synthesiser``). The protocol, the RL rollouts and the counterfactual replay
# all call it, so the policy is trained on, and replayed with, the prompt evaluation sends.


@dataclass(frozen=True)
class Shown:
    """One candidate / peer message as a synthesiser may be shown it: its text and its answer."""

    text: str
    answer: str | None = None


@dataclass(frozen=True)
class SynthState:
    """What a synthesiser's prompt is built from, at one point of an episode."""

    question: str  # task.prompt
    verifier: str  # task.verifier (the answer-format line)
    shown: tuple[Shown, ...]  # the slate / peers' messages / last proposer layer, in order
    round: int = 0  # the protocol's round of this synthesis
    system: str | None = None  # the member's system prompt as the team resolves it (persona included)
    previous: str | None = None  # the solo leader's own previous response (None in its first round)


def chat_messages(system: str | None, turns: list[dict[str, str]]) -> list[dict[str, str]]:
    """The chat an agent receives: its system prompt (when it has one), then the turns. The one
    place a system prompt is put in front (EpisodeContext.ask and the synthesiser builders use it)."""
    return ([{"role": "system", "content": system}] if system else []) + list(turns)


# ---- reflect: answer, then k rounds of self-critique and revision (Madaan et al. 2023) ----
REFLECT_CRITIQUE = (
    "Check your solution above step by step. Point out any mistake you find. Do not write a new solution yet."
)
REFLECT_REVISE = "Using your review, solve the problem again.\n\n{question_prompt}"

# ---- debate: N agents, R rounds, each sees the others' previous answers (Du et al. 2023) ----
DEBATE_ROUND = (
    "Your previous solution:\n{own}\n\n"
    "Solutions from other agents:\n\n{others}\n\n"
    "Use their reasoning as extra information: check each one, then give your own updated solution.\n\n"
    "{question_prompt}"
)

# ---- moa: proposer layers and an aggregator (Wang et al. 2024, "Mixture-of-Agents") ----
MOA_AGGREGATE = (
    "Below are responses from several assistants to the same problem. Some may be wrong. "
    "Critically evaluate them and write one correct, well-reasoned solution.\n\n"
    "{responses}\n\n"
    "{question_prompt}"
)

# ---- maestro: execution agents explore, the central agent selects (Yang et al. 2025) ----
MAESTRO_EXPLORE_ENDORSED = (
    "In the previous round this solution was endorsed:\n{endorsed}\n\n"
    "It may be wrong. Check it and solve the problem yourself.\n\n{question_prompt}"
)
MAESTRO_SELECT = (
    "Problem: {question}\n\n"
    "Here are {m} candidate solutions.\n\n{slate}\n\n"
    "Which candidate is correct? Reply in exactly this format:\n"
    "<choice>NUMBER</choice><why>one or two sentences</why>\n"
    "where NUMBER is the candidate's number (1 to {m})."
)
# Central-Gen: the central agent writes its own answer from the pool instead of selecting.
MAESTRO_GENERATE = (
    "Here are {m} candidate solutions to the problem below.\n\n{slate}\n\n"
    "Use them as you see fit and write your own correct solution.\n\n{question_prompt}"
)

# ---- leader (MLPO, Estornell et al. 2025): K peers answer, a leader synthesises, T rounds ----
LEADER_FORMAT = (
    "Write your reasoning inside <think></think>, then only the final answer inside <answer></answer>."
)
LEADER_SYNTHESISE = (
    "You lead a team. Your team members answered the problem below.\n\n{answers}\n\n"
    "Problem: {question}\n\n"
    "Decide which answers are right (the majority can be wrong) and give the team's final answer. "
    + LEADER_FORMAT
)
LEADER_SOLO = "Problem: {question}\n\n" + LEADER_FORMAT
LEADER_SOLO_REVISE = (
    "Your previous response:\n{previous}\n\nProblem: {question}\n\n"
    "Check your previous response and give your final answer. " + LEADER_FORMAT
)
PEER_REVISE = (
    "Your previous solution:\n{own}\n\n"
    "Your team leader wrote:\n{leader}\n\n"
    "Reconsider the problem with this in mind and give your revised solution.\n\n{question_prompt}"
)

# ---- conductor (Nielsen et al. 2025): a model writes the workflow for a pool of workers ----
# The few-shot workflows come from tasks unrelated to the benchmarks: the paper found these work
# better than same-task examples (-9.4 points without few-shot on LiveCodeBench).
CONDUCTOR_RULES = """You are the Conductor. You do not solve problems yourself: you write a workflow \
that a team of worker models will carry out, one step after another.

Write your reasoning first. Then write exactly three Python lists of equal length (at most {max_steps} steps):
model_id = [...]      the worker for each step, an integer (the workers are Model 0 to Model {last})
subtasks = [...]      the instruction for each step, a string
access_list = [...]   for each step, [] (the worker sees no earlier step) or ["all"] (it sees every earlier step's instruction and response)
The last step's response is the final answer, so the last step must produce it."""
# ``subtasks=false`` (the paper's "without subtasks" ablation): two lists, every step gets the question only
CONDUCTOR_RULES_NO_SUBTASKS = """You are the Conductor. You do not solve problems yourself: you write a workflow \
that a team of worker models will carry out, one step after another. Every worker is given the question itself.

Write your reasoning first. Then write exactly two Python lists of equal length (at most {max_steps} steps):
model_id = [...]      the worker for each step, an integer (the workers are Model 0 to Model {last})
access_list = [...]   for each step, [] (the worker sees no earlier step) or ["all"] (it sees every earlier step's response)
The last step's response is the final answer, so the last step must produce it."""
# out of domain (the paper's default, ``few_shot=out_of_domain``): four workflows on unrelated tasks
CONDUCTOR_EXAMPLES = """Example 1
Question: Write a haiku about autumn rain.
Reasoning: One worker drafts, another polishes with the draft in view.
model_id = [0, 1]
subtasks = ["Write a haiku about autumn rain.", "Improve the haiku so it follows 5-7-5 syllables exactly and return only the haiku."]
access_list = [[], ["all"]]

Example 2
Question: Which river flows through both Vienna and Budapest?
Reasoning: A simple fact; one call is enough.
model_id = [1]
subtasks = ["Answer the question: which river flows through both Vienna and Budapest?"]
access_list = [[]]

Example 3
Question: Write a Python function that checks whether a string is a palindrome.
Reasoning: Plan, write the code, then review it.
model_id = [0, 1, 0]
subtasks = ["Describe the steps of an algorithm that checks whether a string is a palindrome.", "Write the Python function following the plan.", "Review the function for bugs and return the corrected final version."]
access_list = [[], ["all"], ["all"]]

Example 4
Question: Translate 'The library opens at nine' into French.
Reasoning: Two independent translations, then one worker picks the best.
model_id = [0, 1, 1]
subtasks = ["Translate the sentence into French.", "Translate the sentence into French.", "Compare the two translations and return the most accurate one."]
access_list = [[], [], ["all"]]"""
CONDUCTOR_SYSTEM = CONDUCTOR_RULES + "\n\n" + CONDUCTOR_EXAMPLES  # the default prompt
# in domain (``few_shot=in_domain``, the paper's weaker comparison): four workflows of the same shapes on
# questions of the item's own kind, chosen by its verifier. Written for this workbench: no question is
# taken from any benchmark split.
CONDUCTOR_EXAMPLES_IN_DOMAIN = {
    "math": """Example 1
Question: A train travels 180 km in 2.5 hours. What is its average speed in km/h?
Reasoning: One worker solves, another checks the arithmetic with the solution in view.
model_id = [0, 1]
subtasks = ["Solve the problem step by step.", "Check every calculation of the solution and give the final answer."]
access_list = [[], ["all"]]

Example 2
Question: What is 15% of 240?
Reasoning: A single calculation; one call is enough.
model_id = [1]
subtasks = ["Compute 15% of 240 and give the final answer."]
access_list = [[]]

Example 3
Question: Find all real x with x^2 - 5x + 6 = 0 and give their sum.
Reasoning: Plan the method, carry it out, then verify it.
model_id = [0, 1, 0]
subtasks = ["Say which method solves this equation and list its steps.", "Carry out the plan and find the roots.", "Substitute the roots back, fix any error and give the final answer."]
access_list = [[], ["all"], ["all"]]

Example 4
Question: A shop sells pens at 3 for $2. How much do 27 pens cost?
Reasoning: Two independent solutions, then one worker compares them.
model_id = [0, 1, 1]
subtasks = ["Solve the problem.", "Solve the problem.", "Compare the two solutions and give the correct final answer."]
access_list = [[], [], ["all"]]""",
    "choice": """Example 1
Question: Which gas makes up most of the Earth's atmosphere? (A) oxygen (B) nitrogen (C) argon (D) carbon dioxide
Reasoning: One worker answers, another checks the reasoning with the answer in view.
model_id = [0, 1]
subtasks = ["Reason about each option and choose one.", "Check the reasoning and give the final letter."]
access_list = [[], ["all"]]

Example 2
Question: What is the capital of Canada? (A) Toronto (B) Vancouver (C) Ottawa (D) Montreal
Reasoning: A simple fact; one call is enough.
model_id = [1]
subtasks = ["Answer with the letter of the correct option."]
access_list = [[]]

Example 3
Question: A ball is thrown straight up. At the top of its flight, what is its acceleration? (A) zero (B) g downward (C) g upward (D) it depends on the speed
Reasoning: Recall the principle, apply it, then review the choice.
model_id = [0, 1, 0]
subtasks = ["State the physical principle that decides this.", "Apply the principle to each option.", "Review the argument and give the final letter."]
access_list = [[], ["all"], ["all"]]

Example 4
Question: Which of these numbers is prime? (A) 51 (B) 57 (C) 59 (D) 63
Reasoning: Two independent answers, then one worker decides.
model_id = [0, 1, 1]
subtasks = ["Check each option and choose one.", "Check each option and choose one.", "Compare the two answers and give the correct letter."]
access_list = [[], [], ["all"]]""",
    "code": """Example 1
Question: Write a Python function that returns the second largest distinct number in a list.
Reasoning: One worker writes the code, another tests it in its head and fixes it.
model_id = [0, 1]
subtasks = ["Write the function.", "Check the function on edge cases (duplicates, short lists) and return the corrected version."]
access_list = [[], ["all"]]

Example 2
Question: Write a Python function that returns the sum of a list of integers.
Reasoning: A one-line function; one call is enough.
model_id = [1]
subtasks = ["Write the function."]
access_list = [[]]

Example 3
Question: Write a Python function that merges overlapping intervals.
Reasoning: Plan, write the code, then review it.
model_id = [0, 1, 0]
subtasks = ["Describe the algorithm step by step.", "Write the Python function following the plan.", "Review the function for bugs and return the corrected final version."]
access_list = [[], ["all"], ["all"]]

Example 4
Question: Write a Python function that counts the vowels in a string.
Reasoning: Two independent implementations, then one worker picks the correct one.
model_id = [0, 1, 1]
subtasks = ["Write the function.", "Write the function.", "Compare the two functions and return the correct one."]
access_list = [[], [], ["all"]]""",
    "exact": """Example 1
Question: Sort these words alphabetically: pear, apple, fig.
Reasoning: One worker answers, another checks it.
model_id = [0, 1]
subtasks = ["Sort the words.", "Check the order letter by letter and give the final answer."]
access_list = [[], ["all"]]

Example 2
Question: Is the following statement true or false? All squares are rectangles.
Reasoning: A simple judgement; one call is enough.
model_id = [1]
subtasks = ["Decide whether the statement is true or false."]
access_list = [[]]

Example 3
Question: Today is Tuesday. What day of the week is it 10 days from now?
Reasoning: Plan, work it out, then check.
model_id = [0, 1, 0]
subtasks = ["Say how to count the days.", "Count the days following the plan.", "Check the count and give the final answer."]
access_list = [[], ["all"], ["all"]]

Example 4
Question: Complete the sequence of brackets so that it is balanced: ( [ ]
Reasoning: Two independent answers, then one worker decides.
model_id = [0, 1, 1]
subtasks = ["Complete the sequence.", "Complete the sequence.", "Compare the two answers and give the correct one."]
access_list = [[], [], ["all"]]""",
}
CONDUCTOR_DOMAINS = {"numeric": "math", "math": "math", "choice": "choice", "code": "code", "exact": "exact"}
CONDUCTOR_QUESTION = "Question: {question}\nAvailable workers: {workers}."
# a pool whose members have descriptions (the paper's prompt): one line per offered worker
CONDUCTOR_QUESTION_DESCRIBED = "Question: {question}\nAvailable workers:\n{workers}"
CONDUCTOR_WORKER_LINE = "Model {index}: {description}"
CONDUCTOR_RECURSE = (
    "The workflow's final response was:\n{final}\n\n"
    "If it correctly answers the question, reply with three empty lists (model_id = [], subtasks = [], "
    'access_list = []). Otherwise write a new workflow; ["all"] now also includes this response.'
)
CONDUCTOR_RECURSE_NO_SUBTASKS = (
    "The workflow's final response was:\n{final}\n\n"
    "If it correctly answers the question, reply with two empty lists (model_id = [], access_list = []). "
    'Otherwise write a new workflow; ["all"] now also includes this response.'
)
WORKER_STEP = "Step {index}: {instruction}\nResponse:\n{response}"
WORKER_CONTEXT = "Earlier steps of this workflow:\n\n{steps}\n\n"
WORKER_INSTRUCTION = "{context}Your instruction: {instruction}"
