build-fp/chain/qcow2_image.o: chain/qcow2_image.c chain/qcow2_image.h \
 chain/layer_io.h chain/qcow2_format.h common/log.h chain/decompress.h \
 chain/l2_cache.h
chain/qcow2_image.h:
chain/layer_io.h:
chain/qcow2_format.h:
common/log.h:
chain/decompress.h:
chain/l2_cache.h:
