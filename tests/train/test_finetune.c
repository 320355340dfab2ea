/* test_finetune.c - `vlm finetune` end to end on a tiny generated shapes
 * dataset (48 + 16 images, 16x16):
 *  - the loss falls, evaluation prints BLEU-1..4 / CIDEr-D with samples next
 *    to their references and logs eval events; the run directory holds both
 *    tokenizers and model.safetensors;
 *  - `vlm eval` on the run gives the final evaluation's numbers, and `vlm
 *    caption` captions a PNG file and a dataset image as the evaluation did;
 *  - 17 steps + resume in a new process == 40 straight (weights, losses);
 *  - towers taken from a pretraining run directory and frozen: bit-identical
 *    after training, with no optimizer state, while the decoder trains; the
 *    run's text tokenizer comes along; the same towers as a Hugging Face
 *    SigLIP directory (no vlm metadata, sparse config.json) load too;
 *  - a decoder from a Hugging Face-named LlamaForCausalLM fixture (written
 *    here with vlm_st_writer, with config.json and tokenizer.json): sizes,
 *    values and tokenizer are taken from it;
 *  - bad config keys, missing init files, bad freeze prefixes and damaged
 *    checkpoints give clear errors and non-zero exits. */
#include "cli.h"
#include "test.h"
#include "train.h"

#include "stb_write.h"

/* A tiny captioner; 16 image tokens + 6 prompt ids + 20 caption ids <= 48. */
static const char *const cap_config =
    "{\n"
    "  \"model\": {\"type\": \"captioner\",\n"
    "    \"vision\": {\"image_size\": 16, \"patch\": 4, \"width\": 32, \"layers\": 1, \"heads\": 2,\n"
    "               \"mlp\": 64, \"dropout\": 0.1},\n"
    "    \"text\": {\"vocab\": 300, \"ctx_len\": 6, \"width\": 32, \"layers\": 1, \"heads\": 2,\n"
    "             \"mlp\": 64},\n"
    "    \"fusion\": {\"heads\": 2, \"mlp\": 64},\n"
    "    \"decoder\": {\"vocab\": 300, \"width\": 32, \"layers\": 2, \"heads\": 4, \"kv_heads\": 2,\n"
    "                \"mlp\": 64, \"max_len\": 48, \"dropout\": 0.1}},\n"
    "  \"train\": {\"seed\": 3, \"steps\": 40, \"batch_size\": 8, \"threads\": 1, \"log_every\": 1,\n"
    "            \"eval_every\": 20, \"ckpt_every\": 10, \"keep_checkpoints\": 2,\n"
    "            \"optim\": {\"lr\": 3e-3, \"warmup_steps\": 5}},\n"
    "  \"data\": {\"train\": \"shapes.h5\", \"val\": \"shapes-val.h5\", \"caption_len\": 20,\n"
    "           \"eval_images\": 8, \"eval_samples\": 3, \"loader_threads\": 2,\n"
    "           \"augment\": {\"hflip\": true}},\n"
    "  \"out\": \"run\"\n"
    "}\n";

/* The value after "key": in the last line of path holding `line_has`. */
static char *last_line_with(const char *path, const char *line_has) {
    char *s = slurp(path, NULL), *found = NULL;
    for (char *l = s ? strtok(s, "\n") : NULL; l; l = strtok(NULL, "\n"))
        if (strstr(l, line_has)) found = l;
    char *out = found ? strdup(found) : NULL;
    free(s);
    return out;
}

static double json_num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* The final eval event of a run's metrics.jsonl, parsed. */
static cJSON *final_eval(const char *metrics) {
    char *line = last_line_with(metrics, "\"final\":true");
    cJSON *o = line ? cJSON_Parse(line) : NULL;
    free(line);
    return o;
}

/* The caption of the event's first sample (image 0), as vlm caption prints it. */
static void first_caption(const cJSON *ev, char *out, size_t cap) {
    const cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(ev, "samples"), 0);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(s, "caption");
    snprintf(out, cap, "%s", cJSON_IsString(c) ? c->valuestring : "");
    for (char *p = out; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t') *p = ' ';
}

/* ---- a run, its evaluation, the CLI on it ---------------------------------------------- */

static void test_finetune_run(void) {
    int st = vlm_run("ft.log", "finetune -c cap.json");
    CHECK(st == 0, "finetune exit %d", st);
    CHECK(file_has(tpath("ft.log"), "evaluation at step 20:"), "periodic eval");
    CHECK(file_has(tpath("ft.log"), "evaluation at step 40 (final):"), "final eval");
    CHECK(file_has(tpath("ft.log"), "BLEU-4 ") && file_has(tpath("ft.log"), "CIDEr-D "), "scores");
    CHECK(file_has(tpath("ft.log"), "      ref: a "), "samples next to references");
    CHECK(file_has(tpath("ft.log"), "trainable)"), "header counts the frozen heads");
    CHECK(exists(tpath("run/tokenizer.json")) && exists(tpath("run/decoder_tokenizer.json")),
          "both tokenizers in the run directory");
    CHECK(exists(tpath("run/model.safetensors")), "final weights");
    int n;
    double first, last;
    loss_ends(tpath("run/metrics.jsonl"), 5, &first, &last, &n);
    CHECK(n == 40, "40 train events, got %d", n);
    CHECK(last < 0.8 * first, "loss falls: first 5 %.4f, last 5 %.4f", first, last);
    cJSON *ev = final_eval(tpath("run/metrics.jsonl"));
    CHECK(json_num(ev, "bleu4") >= 0 && json_num(ev, "cider_d") >= 0 && json_num(ev, "images") == 16 &&
              cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(ev, "samples")) == 3,
          "final eval event with BLEU, CIDEr-D and 3 samples");
    cJSON_Delete(ev);
    CHECK(file_has(tpath("run/metrics.jsonl"), "\"event\":\"eval\",\"step\":20"), "periodic event");
    st = vlm_run("inspect.log", "inspect run/model.safetensors");
    CHECK(st == 0 && file_has(tpath("inspect.log"), "decoder.model.layers.1.mlp.gate_proj.weight"),
          "HF-named decoder, exit %d", st);
}

/* A 16x16 PNG of shapes scene 7. */
static int write_scene_png(const char *path) {
    vlm_shape_scene sc;
    vlm_image img;
    if (vlm_shape_scene_make(99, 7, 16, &sc) || vlm_shape_scene_render(&sc, 16, &img)) return -1;
    int ok = stbi_write_png(path, 16, 16, 3, img.rgb, 16 * 3);
    vlm_image_free(&img);
    return ok ? 0 : -1;
}

static void test_eval_and_caption(void) {
    cJSON *ev = final_eval(tpath("run/metrics.jsonl"));
    int st = vlm_run("eval.log", "eval --model run --json");
    char *out = slurp(tpath("eval.log"), NULL);
    cJSON *got = out ? cJSON_Parse(out) : NULL;
    CHECK(st == 0 && got, "eval --json exit %d: %s", st, out ? out : "");
    CHECK(json_num(got, "bleu4") == json_num(ev, "bleu4") &&
              json_num(got, "cider_d") == json_num(ev, "cider_d") && json_num(got, "images") == 16,
          "vlm eval reproduces the final evaluation: %s", out ? out : "");
    cJSON_Delete(got);
    free(out);
    st = vlm_run("eval2.log", "eval --model run --dataset shapes-val.h5 --max-images 4");
    CHECK(st == 0 && file_has(tpath("eval2.log"), "4 images, 4 references") &&
              file_has(tpath("eval2.log"), "BLEU-4"), "eval text output, exit %d", st);
    /* the first sample of the final evaluation is val image 0's greedy caption */
    char want[512], line[600];
    first_caption(ev, want, sizeof want);
    cJSON_Delete(ev);
    st = vlm_run("cap.log", "caption --model run --dataset shapes-val.h5 --limit 1 --max-tokens 20 "
                 "--threads 1");
    snprintf(line, sizeof line, "0\t%s\n", want);
    CHECK(st == 0 && want[0] && file_has(tpath("cap.log"), line), "caption of image 0, exit %d", st);
    CHECK(file_has(tpath("cap.log"), "BLEU-4"), "--dataset scores");

    CHECK(write_scene_png(tpath("scene.png")) == 0, "write png");
    st = vlm_run("png.log", "caption --model run scene.png");
    CHECK(st == 0 && file_has(tpath("png.log"), "scene.png\t"), "caption a PNG file, exit %d", st);
    st = vlm_run("png2.log", "caption --model run/checkpoints/step-00000040.safetensors scene.png");
    CHECK(st == 0 && file_has(tpath("png2.log"), "scene.png\t"), "from a checkpoint, exit %d", st);
}

/* ---- exact resume ------------------------------------------------------------------------ */

static void test_resume(void) {
    CHECK(vlm_run("B1.log", "finetune -c cap.json --set out=B --stop-after 17") == 0, "first half");
    CHECK(exists(tpath("B/checkpoints/step-00000017.safetensors")), "checkpoint at the stop");
    CHECK(!exists(tpath("B/model.safetensors")), "no final model yet");
    CHECK(file_has(tpath("B1.log"), "continue with vlm finetune --resume B"), "says how to go on");
    CHECK(vlm_run("B2.log", "finetune --resume B") == 0, "resume");
    CHECK(file_has(tpath("B2.log"), "resumed from B/checkpoints/step-00000017.safetensors"), "log");
    CHECK(same_bytes(tpath("run/model.safetensors"), tpath("B/model.safetensors")),
          "resumed weights are bitwise those of the straight run");
    CHECK(same_losses(tpath("run/metrics.jsonl"), tpath("B/metrics.jsonl")), "same losses");
}

/* ---- towers from a pretraining run, frozen ------------------------------------------------- */

static const char *const siglip_config =
    "{\"model\": {\"type\": \"siglip\",\n"
    "   \"vision\": {\"image_size\": 16, \"patch\": 4, \"width\": 24, \"layers\": 2, \"heads\": 2,\n"
    "              \"mlp\": 48},\n"
    "   \"text\": {\"vocab\": 280, \"ctx_len\": 8, \"width\": 16, \"layers\": 1, \"heads\": 2,\n"
    "            \"mlp\": 32}},\n"
    " \"train\": {\"seed\": 1, \"steps\": 6, \"batch_size\": 8, \"threads\": 1, \"log_every\": 3,\n"
    "           \"optim\": {\"lr\": 3e-3}},\n"
    " \"data\": {\"train\": \"shapes.h5\"},\n"
    " \"out\": \"P\"}\n";

/* Whether tensor name holds the same bytes in two files (cmp: 1 same, 0 not, -1 missing). */
static int same_tensor(vlm_st *a, vlm_st *b, const char *name) {
    int i = vlm_st_find(a, name), j = vlm_st_find(b, name);
    if (i < 0 || j < 0) return -1;
    size_t na, nb;
    const void *x = vlm_st_data(a, i, &na), *y = vlm_st_data(b, j, &nb);
    return na == nb && !memcmp(x, y, na);
}

/* Every tensor of `from` under prefix is in `to` with the same bytes. */
static int count_same(vlm_st *from, vlm_st *to, const char *prefix, int *differ) {
    int same = 0;
    *differ = 0;
    for (int i = 0; i < vlm_st_count(from); i++) {
        const char *name = vlm_st_name(from, i);
        if (strncmp(name, prefix, strlen(prefix))) continue;
        if (same_tensor(from, to, name) == 1) same++;
        else (*differ)++;
    }
    return same;
}

/* The frozen towers have no optimizer state: exp_avg_sq is 0 over their
 * ranges (found through a model built from the run's config), non-zero over
 * the decoder's. */
static void check_no_state(const char *ckpt, const char *config) {
    cJSON *root = vlm_json_load(tpath(config));
    vlm_run_cfg cfg;
    vlm_run_cfg_defaults(&cfg);
    vlm_model *m = root && !vlm_run_cfg_bind(root, &cfg) ? vlm_model_new(&cfg.model, 0) : NULL;
    cJSON_Delete(root);
    vlm_st *st = vlm_st_open(tpath(ckpt));
    int k = st ? vlm_st_find(st, "optim.exp_avg_sq") : -1;
    CHECK(m && k >= 0, "model and optimizer state: %s", vlm_last_error());
    if (m && k >= 0) {
        const float *v = vlm_st_data(st, k, NULL);
        int64_t towers_nonzero = 0, decoder_nonzero = 0;
        for (int i = 0; i < vlm_params_count(m->params); i++) {
            const vlm_tensor *t = vlm_params_at(m->params, i);
            int64_t off = vlm_params_offset(m->params, t), nz = 0;
            for (int64_t e = 0; e < t->numel; e++) {
                float x;
                memcpy(&x, v + off + e, sizeof x); /* the data may be unaligned */
                nz += x != 0;
            }
            if (!strncmp(t->name, "vision_model.", 13) || !strncmp(t->name, "text_model.", 11))
                towers_nonzero += nz;
            if (!strncmp(t->name, "decoder.", 8)) decoder_nonzero += nz;
        }
        CHECK(towers_nonzero == 0, "frozen towers have optimizer state (%lld values)",
              (long long)towers_nonzero);
        CHECK(decoder_nonzero > 0, "the decoder has no optimizer state");
    }
    vlm_st_close(st);
    vlm_model_free(m);
}

static void test_towers_from_pretraining(void) {
    CHECK(write_text(tpath("siglip.json"), siglip_config) == 0, "write");
    int st = vlm_run("P.log", "pretrain -c siglip.json");
    CHECK(st == 0, "pretrain exit %d", st);
    st = vlm_run("F.log", "finetune -c cap.json --set out=F --set train.steps=10 "
                 "--set train.optim.warmup_steps=2 --set data.val= --init-towers P "
                 "--set 'train.freeze=[\"vision_model.\", \"text_model.\"]'");
    CHECK(st == 0, "finetune from P exit %d", st);
    CHECK(file_has(tpath("F.log"), "init.towers: model.vision and model.text from "
                                   "P/model.safetensors (image 16, width 24 x 2 layers"),
          "tower sizes come from the run");
    CHECK(file_has(tpath("F.log"), "copied to F/tokenizer.json"), "text tokenizer comes along");
    CHECK(same_bytes(tpath("P/tokenizer.json"), tpath("F/tokenizer.json")), "same tokenizer");
    vlm_st *p = vlm_st_open(tpath("P/model.safetensors")), *f = vlm_st_open(tpath("F/model.safetensors"));
    CHECK(p && f, "open: %s", vlm_last_error());
    if (p && f) {
        int dv, dt, dl;
        int sv = count_same(p, f, "vision_model.", &dv), stx = count_same(p, f, "text_model.", &dt);
        int sl = count_same(p, f, "logit_", &dl);
        CHECK(sv > 10 && dv == 0, "vision tower: %d same, %d differ", sv, dv);
        CHECK(stx > 10 && dt == 0, "text tower: %d same, %d differ", stx, dt);
        CHECK(sl == 2 && dl == 0, "logits: %d same, %d differ", sl, dl);
    }
    vlm_st_close(p);
    vlm_st_close(f);
    /* the decoder trained: it left its seed initialisation */
    vlm_st *f0 = vlm_st_open(tpath("F/checkpoints/step-00000010.safetensors"));
    cJSON *root = vlm_json_load(tpath("F/config.json"));
    vlm_run_cfg cfg;
    vlm_run_cfg_defaults(&cfg);
    vlm_model *m = root && !vlm_run_cfg_bind(root, &cfg) ? vlm_model_new(&cfg.model, 3) : NULL;
    cJSON_Delete(root);
    float *w = m ? vlm_f32(vlm_params_find(m->params, "decoder.model.layers.0.mlp.up_proj.weight")) : NULL;
    int64_t n = w ? vlm_params_find(m->params, "decoder.model.layers.0.mlp.up_proj.weight")->numel : 0;
    float *got = malloc((size_t)(n ? n : 1) * sizeof *got);
    CHECK(f0 && w && vlm_st_read_f32(f0, "decoder.model.layers.0.mlp.up_proj.weight", got, n) == 0 &&
              memcmp(got, w, (size_t)n * sizeof *w) != 0, "the decoder trained");
    free(got);
    vlm_model_free(m);
    vlm_st_close(f0);
    check_no_state("F/checkpoints/step-00000010.safetensors", "F/config.json");
}

/* The same towers as a Hugging Face SigLIP directory: P's tensors without
 * vlm's metadata, a sparse config.json (head counts only) and the tokenizer. */
static int write_hf_siglip(void) {
    mkdir(tpath("hfsig"), 0755);
    vlm_st *p = vlm_st_open(tpath("P/model.safetensors"));
    vlm_st_writer *w = p ? vlm_st_writer_new() : NULL;
    int rc = w ? 0 : -1;
    for (int i = 0; !rc && i < vlm_st_count(p); i++)
        rc = vlm_st_writer_add(w, vlm_st_name(p, i), vlm_st_dtype(p, i), vlm_st_ndim(p, i),
                               vlm_st_shape(p, i), vlm_st_data(p, i, NULL));
    if (!rc) rc = vlm_st_writer_save(w, tpath("hfsig/model.safetensors"));
    vlm_st_writer_free(w);
    vlm_st_close(p);
    if (!rc) rc = write_text(tpath("hfsig/config.json"),
                             "{\"model_type\": \"siglip\", \"vision_config\": {\"num_attention_heads\": 2},"
                             " \"text_config\": {\"num_attention_heads\": 2, \"pad_token_id\": 0}}");
    if (!rc) rc = vlm_copy_file(tpath("P/tokenizer.json"), tpath("hfsig/tokenizer.json"));
    return rc;
}

static void test_towers_from_hf(void) {
    CHECK(write_hf_siglip() == 0, "fixture: %s", vlm_last_error());
    int st = vlm_run("S.log", "finetune -c cap.json --set out=S --set train.steps=1 "
                     "--set train.optim.warmup_steps=1 --set data.val= --init-towers hfsig");
    CHECK(st == 0, "finetune from HF SigLIP exit %d", st);
    CHECK(file_has(tpath("S.log"), "init.towers: model.vision and model.text from hfsig/config.json "
                                   "(image 16, width 24 x 2 layers"), "sizes from config.json");
    CHECK(file_has(tpath("S.log"), "init.towers: Hugging Face SigLIP weights from "
                                   "hfsig/model.safetensors"), "HF loader");
    vlm_st *p = vlm_st_open(tpath("P/model.safetensors")), *f = vlm_st_open(tpath("S/model.safetensors"));
    int dv = -1, sv = p && f ? count_same(p, f, "vision_model.", &dv) : 0;
    CHECK(sv > 10 && dv == 0, "vision tower from the HF file: %d same, %d differ", sv, dv);
    vlm_st_close(p);
    vlm_st_close(f);
}

/* ---- a decoder from a Hugging Face-named fixture ---------------------------------------- */

/* hfdec/: model.safetensors with LlamaForCausalLM names (model.*, tied: no
 * lm_head), config.json and a tokenizer.json whose only special is
 * <|endoftext|> (SmolLM2's layout: BOS = EOS = pad = id 0). The decoder is
 * larger than cap.json's, so the sizes must come from config.json. */
static int write_hf_decoder(void) {
    mkdir(tpath("hfdec"), 0755);
    const char *cfg = "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\",\n"
                      " \"hidden_size\": 48, \"intermediate_size\": 96, \"num_attention_heads\": 4,\n"
                      " \"num_hidden_layers\": 2, \"num_key_value_heads\": 2, \"rms_norm_eps\": 1e-5,\n"
                      " \"rope_theta\": 10000.0, \"max_position_embeddings\": 64,\n"
                      " \"tie_word_embeddings\": true, \"vocab_size\": 290}\n";
    if (write_text(tpath("hfdec/config.json"), cfg)) return -1;
    static const char *const specials[] = {"<|endoftext|>"};
    static const char *const texts[] = {"a small red circle", "a large blue square left of a small green triangle"};
    vlm_bpe_train_opts o = {.vocab_size = 290, .specials = specials, .n_specials = 1};
    vlm_bpe *bpe = vlm_bpe_train(texts, NULL, 2, &o);
    int rc = bpe ? vlm_bpe_save(bpe, tpath("hfdec/tokenizer.json")) : -1;
    vlm_bpe_free(bpe);
    /* the weights: a captioner with this decoder, its decoder.* tensors renamed */
    vlm_model_cfg mc;
    vlm_model_cfg_defaults(&mc);
    strcpy(mc.type, "captioner");
    mc.decoder = (vlm_decoder_cfg){.vocab = 290, .width = 48, .layers = 2, .heads = 4, .kv_heads = 2,
                                   .mlp = 96, .max_len = 64, .rms_eps = 1e-5f,
                                   .rope_theta = 10000.0f, .tie_embeddings = true};
    vlm_model *m = rc ? NULL : vlm_model_new(&mc, 11);
    vlm_st_writer *w = m ? vlm_st_writer_new() : NULL;
    float *v = m ? vlm_params_values(m->params) : NULL;
    for (int64_t i = 0; v && i < vlm_params_numel(m->params); i++) v[i] += 0.001f * (float)(i % 97);
    for (int i = 0; w && i < vlm_params_count(m->params); i++) {
        vlm_tensor *t = vlm_params_at(m->params, i);
        if (strncmp(t->name, "decoder.", 8)) continue;
        if (vlm_st_writer_add(w, t->name + 8, "F32", t->ndim, t->shape, t->data)) rc = -1;
    }
    if (!w || vlm_st_writer_save(w, tpath("hfdec/model.safetensors"))) rc = -1;
    /* keep the expected values: the same tensors under our names */
    if (!rc && vlm_st_save_params(m->params, tpath("hfdec-expected.safetensors"), NULL, NULL)) rc = -1;
    vlm_st_writer_free(w);
    vlm_model_free(m);
    return rc;
}

static void test_decoder_from_hf(void) {
    CHECK(write_hf_decoder() == 0, "fixture: %s", vlm_last_error());
    /* update 0 runs at lr 0 (warmup), so one step keeps the loaded values */
    int st = vlm_run("H.log", "finetune -c cap.json --set out=H --set train.steps=1 "
                     "--set train.optim.warmup_steps=1 --set data.val= --init-decoder hfdec");
    CHECK(st == 0, "finetune with an HF decoder, exit %d", st);
    CHECK(file_has(tpath("H.log"), "init.decoder: model.decoder from hfdec/config.json (width 48 "
                                   "x 2 layers, 4/2 heads, vocab 290)"), "sizes from config.json");
    CHECK(file_has(tpath("H.log"), "init.decoder: Hugging Face Llama weights from "
                                   "hfdec/model.safetensors"), "HF names");
    CHECK(same_bytes(tpath("hfdec/tokenizer.json"), tpath("H/decoder_tokenizer.json")),
          "the decoder's tokenizer.json comes along");
    vlm_st *want = vlm_st_open(tpath("hfdec-expected.safetensors"));
    vlm_st *got = vlm_st_open(tpath("H/model.safetensors"));
    CHECK(want && got, "open: %s", vlm_last_error());
    int differ = 0, same = want && got ? count_same(want, got, "decoder.", &differ) : 0;
    CHECK(same == 2 * 9 + 2 && differ == 0, "decoder tensors: %d same, %d differ", same, differ);
    vlm_st_close(want);
    vlm_st_close(got);
    /* weights whose shapes contradict config.json: an error naming the tensor */
    CHECK(write_text(tpath("hfdec/config.json"), "{\"hidden_size\": 48, \"num_attention_heads\": 4, "
                     "\"num_key_value_heads\": 4, \"tie_word_embeddings\": true}") == 0, "write");
    st = vlm_run("H2.log", "finetune -c cap.json --set out=H2 --init-decoder hfdec");
    CHECK(st == 1 && file_has(tpath("H2.log"), "init.decoder: ") &&
              file_has(tpath("H2.log"), "k_proj"), "kv heads contradicted, exit %d", st);
}

/* ---- errors ----------------------------------------------------------------------------------- */

static void expect(const char *args, int st, const char *want) {
    int got = vlm_run("err.log", "finetune %s", args);
    CHECK(got == st, "'%s': exit %d, expected %d", args, got, st);
    if (want) CHECK(file_has(tpath("err.log"), want), "'%s' says '%s'", args, want);
}

static void test_errors(void) {
    expect("-c cap.json --set out=E --set data.promt=x", 1,
           "error: config: unknown key 'data.promt' (finetune)");
    expect("-c cap.json --set out=E --set model.type=siglip", 1,
           "model.type must be \"captioner\" for vlm finetune");
    expect("-c cap.json --set out=E --init-towers nothere", 1,
           "init.towers: nothere: no such file or directory");
    expect("-c cap.json --set out=E --init-decoder missing/model.safetensors", 1,
           "init.decoder: missing/model.safetensors: no such file");
    expect("-c cap.json --set out=E --set data.decoder_tokenizer=nothere.json", 1, "nothere.json");
    expect("-c cap.json --set out=E --set train.freeze=vison_model.", 1,
           "train.freeze: no parameter name starts with 'vison_model.'");
    expect("-c cap.json --set out=E --set train.freeze=3", 1, "train.freeze must be an array");
    expect("-c cap.json --set out=E --set data.caption_len=40", 1,
           "exceed model.decoder.max_len 48");
    expect("-c cap.json --set out=W --set train.steps=1 --set train.optim.warmup_steps=1 "
           "--set data.val= --set data.caption_len=4", 0,
           "training captions are longer than data.caption_len 4 ids");
    expect("", 2, "a config is required");
    expect("--resume B --init-towers P", 2, "exclude each other");
    expect("-c cap.json --set out=B", 1, "already holds a run");

    /* damaged checkpoints: a truncated file given directly, and a run whose
     * only checkpoint has a flipped byte */
    CHECK(vlm_run("D1.log", "finetune -c cap.json --set out=D --stop-after 3") == 0, "D");
    const char *ck = tpath("D/checkpoints/step-00000003.safetensors");
    size_t n = 0;
    char *bytes = slurp(ck, &n);
    FILE *f = fopen(ck, "r+b");
    if (f && bytes) {
        fseek(f, (long)n - 50, SEEK_SET);
        fputc(bytes[n - 50] ^ 0x20, f);
    }
    if (f) fclose(f);
    expect("--resume D/checkpoints/step-00000003.safetensors", 1, "checksum mismatch");
    expect("--resume D", 1, "no usable checkpoint in D/checkpoints");
    if (bytes) {
        FILE *g = fopen(tpath("T.safetensors"), "wb");
        if (g) fwrite(bytes, 1, n / 3, g), fclose(g);
    }
    free(bytes);
    expect("--resume T.safetensors", 1, "T.safetensors");
}

static void test_help(void) {
    CHECK(vlm_run("help.log", "finetune --help") == 0, "finetune --help");
    const char *want[] = {"data.prompt", "data.decoder_tokenizer", "data.caption_len", "train.freeze",
                          "init.towers", "init.decoder", "--init-towers PATH", "--init-decoder PATH",
                          "vlm finetune -c configs/finetune-shapes.json", NULL};
    for (int i = 0; want[i]; i++) CHECK(file_has(tpath("help.log"), want[i]), "help has %s", want[i]);
    CHECK(vlm_run("top.log", "--help") == 0 && file_has(tpath("top.log"), "finetune"), "vlm --help");
    /* the shipped recipe parses and validates up to this override */
    const char *src = getenv("VLM_SOURCE_DIR");
    int st = vlm_run("recipe.log", "finetune -c '%s/configs/finetune-shapes.json' --set train.steps=0 "
                     "--set train.epochs=0", src ? src : ".");
    CHECK(st == 1 && file_has(tpath("recipe.log"), "train.steps and train.epochs are both 0"),
          "configs/finetune-shapes.json, exit %d", st);
}

int main(void) {
    if (make_tmpdir("finetune")) return 1;
    CHECK(make_shapes() == 0, "prepare shapes");
    CHECK(write_text(tpath("cap.json"), cap_config) == 0, "config");
    test_finetune_run();
    test_eval_and_caption();
    test_resume();
    test_towers_from_pretraining();
    test_towers_from_hf();
    test_decoder_from_hf();
    test_errors();
    test_help();
    remove_tmpdir();
    return TEST_DONE();
}
