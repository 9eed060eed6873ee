# Builds the tiny real-tokenizer models the engine tests use (run by the engine_models_setup test):
# random weights with the shapes of real families scaled down (2 layers, hidden 64) and a vocabulary
# as large as the real tokenizer copied beside them (qwen3 or llama3 from LMX_SHARED_DIR).
#   cmake -DLMX=path/to/lmx -DTOK=tokenizer_fixtures -DOUT=engine_models -P make_models.cmake
if(NOT EXISTS ${TOK}/qwen3/tokenizer.json OR NOT EXISTS ${TOK}/llama3/tokenizer.json)
  message(STATUS "engine models: no real tokenizers in ${TOK}; engine tests will skip")
  file(REMOVE_RECURSE ${OUT})
  return()
endif()
file(MAKE_DIRECTORY ${OUT})
# name  shape  dtype  scale-down  vocab (= the tokenizer's: 151643 + 26 added / 128256)
foreach(spec "qwen3-q4 qwen3-0.6b q4 16 151669" "llama32-q8 llama-3.2-1b q8 32 128256"
             "llama3-bf16 llama-3-8b bf16 64 128256")
  separate_arguments(a UNIX_COMMAND "${spec}")
  list(GET a 0 name)
  list(GET a 1 shape)
  list(GET a 2 dtype)
  list(GET a 3 scale)
  list(GET a 4 vocab)
  if(EXISTS ${OUT}/${name}/model.safetensors AND EXISTS ${OUT}/${name}/tokenizer.json)
    continue()
  endif()
  execute_process(COMMAND ${LMX} dev random-model ${shape} ${OUT}/${name} --dtype ${dtype} --layers 2
                          --scale-down ${scale} --vocab ${vocab} --seed 7 --threads 1 --tokenizer ${TOK}
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "lmx dev random-model ${shape} failed (${rc})")
  endif()
endforeach()
