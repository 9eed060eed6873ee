# Builds the tiny real-tokenizer models the engine tests use (run by the engine_models_setup test):
# random weights with the shapes of real families scaled down (2 layers, hidden 64) and a vocabulary
# as large as the real tokenizer copied beside them (qwen3, llama3 or llama2 from tests/fixtures/tokenizers).
#   cmake -DLMX=path/to/lmx -DTOK=tokenizer_fixtures -DOUT=engine_models -P make_models.cmake
if(NOT EXISTS ${TOK}/qwen3/tokenizer.json OR NOT EXISTS ${TOK}/llama3/tokenizer.json
   OR NOT EXISTS ${TOK}/llama2/tokenizer.json)
  message(STATUS "engine models: no real tokenizers in ${TOK}; engine tests will skip")
  file(REMOVE_RECURSE ${OUT})
  return()
endif()
file(MAKE_DIRECTORY ${OUT})
# name  shape  dtype  scale-down  vocab  tokenizer
#   qwen3-q4, llama32-q8: the real qwen3 / llama3 tokenizers and chat templates (vocab 151643 + 26
#   added / 128256); tiny-*: the llama2 tokenizer (vocab 32000: 5x cheaper to load and to run, for
#   the tests that need many loads and tokens, e.g. under sanitizers) with a llama2-style
#   chat_template.jinja from this folder.
foreach(spec "qwen3-q4 qwen3-0.6b q4 16 151669 ${TOK}" "llama32-q8 llama-3.2-1b q8 32 128256 ${TOK}"
             "tiny-qwen-q4 qwen3-0.6b q4 16 32000 ${TOK}/llama2" "tiny-llama32-q8 llama-3.2-1b q8 32 32000 ${TOK}/llama2"
             "tiny-llama3-bf16 llama-3-8b bf16 64 32000 ${TOK}/llama2")
  separate_arguments(a UNIX_COMMAND "${spec}")
  list(GET a 0 name)
  list(GET a 1 shape)
  list(GET a 2 dtype)
  list(GET a 3 scale)
  list(GET a 4 vocab)
  list(GET a 5 tok)
  if(EXISTS ${OUT}/${name}/model.safetensors AND EXISTS ${OUT}/${name}/tokenizer.json)
    continue()
  endif()
  execute_process(COMMAND ${LMX} dev random-model ${shape} ${OUT}/${name} --dtype ${dtype} --layers 2
                          --scale-down ${scale} --vocab ${vocab} --seed 7 --threads 1 --tokenizer ${tok}
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "lmx dev random-model ${shape} failed (${rc})")
  endif()
  if(name MATCHES "^tiny-")
    configure_file(${CMAKE_CURRENT_LIST_DIR}/llama2_chat_template.jinja ${OUT}/${name}/chat_template.jinja COPYONLY)
  endif()
endforeach()
