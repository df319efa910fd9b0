build-fp/chain/chain.o: chain/chain.c chain/chain.h chain/layer_io.h \
 common/log.h chain/qcow2_image.h chain/qcow2_format.h
chain/chain.h:
chain/layer_io.h:
common/log.h:
chain/qcow2_image.h:
chain/qcow2_format.h:
