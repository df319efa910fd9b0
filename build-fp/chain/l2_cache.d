build-fp/chain/l2_cache.o: chain/l2_cache.c chain/l2_cache.h \
 chain/layer_io.h chain/chain.h
chain/l2_cache.h:
chain/layer_io.h:
chain/chain.h:
